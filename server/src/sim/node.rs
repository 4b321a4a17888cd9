//! One simulated node: the real [`Ledger`], the real [`Journal`] over the simulated disk
//! ([`MemStorage`]), the real checkpoint writer and snapshot store over a second simulated
//! disk ([`CheckpointWriter`], `SnapshotStore` on [`MemDirectory`]), the real restart from
//! a snapshot (`node::snapshots::load`), and the real replication cores ([`Primary`],
//! [`Follower`], [`Checkpoints`], [`Election`], [`on_prepare`]). The glue between them (what a message
//! makes the node do) is the simulator's own and mirrors `server/src/node` in
//! simplified form: see docs/design.md, "Deterministic simulation".

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use tally_codecs::Transfer;
use tally_codecs::outcome::Outcome;
use tally_codecs::wire::{Reply, Request};
use tally_engine::Ledger;
use tally_engine::cold::HistoryLookup;

use tally_engine::pipeline::{Command, PipelineStats, Timestamps, tick_due};
use tally_journal::repair::{DamagedRange, PeerRecord, damaged_range_on, repair_on};
use tally_journal::sim::{MemDirectory, MemStorage};
use tally_journal::{
    ChainHash, FlushFailure, Journal, JournalConfig, RECORD_HEADER_BYTES, RecoveryMode, SET_ASIDE_SUFFIX, SnapshotStore,
};
use tally_replication::{
    CheckpointSchedule, Checkpoints, Decision, Election, FollowError, Follower, LogPosition, Message,
    PRE_VOTE_VETO_GRACE, PreVote, Prepared, Primary, PrimaryContact, Record, Step, candidate_epoch,
    epoch_answers_needed, holds_back, on_pre_vote, on_prepare,
};
use tally_sinks::stream::StreamReader;

#[cfg(feature = "sim-bugs")]
use super::Bug;
use super::disk::open_history;
use super::net::{Addr, Answer, Payload};
use super::{Cluster, Ctx, Kind};
use crate::history::{FILE_NAME, HistoryStage};
use crate::node::checkpoints::CheckpointWriter;
use crate::node::outcome_log::OutcomeStream;
use crate::node::recover::{self, Recovered, Stores};
use crate::node::repair::peer_record;
use crate::node::replay::Deriving;
use crate::node::{journal_codec, rejoin, snapshots};

/// Records between two state-hash checkpoints the primary ships.
const CHECKPOINT_INTERVAL: u64 = 8;
/// Records in one `Records` message at most.
const RECORDS_PER_MESSAGE: usize = 32;
/// A standby that heard nothing from its primary for this long subscribes again.
const SILENCE_NS: u64 = 150_000_000;
/// How long a candidate waits for promises (and then for its catch-up).
const PROMOTE_TIMEOUT_NS: u64 = 300_000_000;
const FETCH_RETRY_NS: u64 = 60_000_000;
/// How often a node without an epoch asks its peers theirs (`tally`: every 100 ms).
const EPOCH_ASK_NS: u64 = 100_000_000;
/// Chance per tick (per mille) that a node with inputs applied since its last checkpoint
/// takes one; a staged one is offered for commit at every tick.
const CHECKPOINT_PER_MILLE: u64 = 20;
/// Chance per tick (per mille) of a durable commit of the history store, and of a sync of
/// the outcome stream (`tally` does both on timers: 100 ms and 5 ms).
const HISTORY_DURABLE_PER_MILLE: u64 = 100;
const OUTCOMES_SYNC_PER_MILLE: u64 = 300;
/// Hot windows a node starts with, one drawn at each start: inputs, transfer events.
/// Small, so that evictions and cold look-ups happen within a few inputs; a restart may
/// draw another (the window is not part of the state).
const HOT_WINDOWS: [(u64, u64); 5] = [(1, 1), (2, 3), (3, 16), (8, 4), (64, 1_000)];
/// Outcome-stream segments (bytes), small so that they roll over.
const OUTCOME_SEGMENT_BYTES: usize = 16 << 10;

/// One journal record as this node holds it (a mirror of its journal, rebuilt from the
/// journal itself on every restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub epoch: u32,
    pub timestamp: u64,
    pub operation: u8,
    pub chain: ChainHash,
    pub payload: Vec<u8>,
}

impl Held {
    /// A new input of `epoch` (its chain is the journal's to give).
    fn of(command: &Command, epoch: u32, timestamp: u64) -> Held {
        let mut payload = Vec::new();
        journal_codec::encode(command, &mut payload);
        Held { epoch, timestamp, operation: command.operation() as u8, chain: [0; 16], payload }
    }
}

/// A reply the primary holds back until its input is durable here and on `self.cluster.replicas()`
/// standbys.
struct Pending {
    sequence: u64,
    client: usize,
    request_id: u64,
    reply: Option<Reply>,
}

struct PrimaryRole {
    core: Primary,
    /// `tally`'s sequencer rule: strictly increasing timestamps from the node's wall
    /// clock, continuing after the journal's last one.
    timestamps: Timestamps,
    /// The last tick's timestamp (the ticker's `last_tick`).
    last_tick: u64,
    /// When to send the state hash (to every subscriber at once: each gets every one, as
    /// each of `tally`'s streams has its own schedule).
    checkpoints: CheckpointSchedule,
    /// Standbys subscribed, and the next sequence to send each.
    subscribers: BTreeMap<usize, u64>,
    /// Each subscriber's stream (its subscription): what is shipped to it goes there.
    streams: BTreeMap<usize, u64>,
    pending: Vec<Pending>,
    /// The highest commit mark reported to the checker.
    committed: u64,
}

struct StandbyRole {
    follower: Follower,
    checkpoints: Checkpoints,
    primary: Option<usize>,
    /// The stream of the current subscription: messages of an older one are ignored.
    stream: u64,
    /// The primary accepted this subscription (it sent records or a heartbeat): only
    /// then are acknowledgements sent, since only then is this log known to be a prefix
    /// of the primary's.
    confirmed: bool,
    last_heard: u64,
}

struct CandidateRole {
    election: Election,
    force: bool,
    /// A recovering node forced to stand (`tally promote --force` allows it): its own
    /// promise breaks the rule, so whatever the promotion loses is forfeited.
    recovering: bool,
    deadline: u64,
    decision: Option<Decision>,
    /// The decision was forced short of the rule (too few promises, or a recovering
    /// candidate): recorded as such only if this candidate really becomes primary.
    short: bool,
    fetched_at: u64,
}

enum Role {
    Primary(PrimaryRole),
    Standby(StandbyRole),
    Candidate(CandidateRole),
}

pub struct Up {
    /// Recovery cut records from the journal's tail at this start (`recover::cut_records`).
    cut_tail: bool,
    pub journal: Journal<MemStorage>,
    pub ledger: Ledger,
    /// `log[s - 1]` is record `s`.
    pub log: Vec<Held>,
    role: Role,
    derived: Derived,
}

/// What the node derives from its journal, as `tally` does: the history store (cold
/// state, written after each input, made durable now and then), the outcome stream, and
/// checkpoints (`tally`'s writer driven step by step instead of by its thread).
struct Derived {
    history: HistoryStage,
    outcomes: OutcomeStream<MemStorage>,
    checkpoints: CheckpointWriter<MemDirectory>,
}

/// A node's disks: each loses and tears what was not synced when the power goes.
#[derive(Clone, Default)]
pub struct Disks {
    pub journal: MemStorage,
    pub snapshots: MemStorage,
    pub history: MemStorage,
    pub outcomes: MemStorage,
}

impl Disks {
    pub fn crash(&self, writeback_seed: Option<u64>) {
        let disks = [&self.journal, &self.snapshots, &self.history, &self.outcomes];
        for (disk, salt) in disks.into_iter().zip(0u32..) {
            match writeback_seed {
                Some(seed) => disk.crash_with_partial_writeback(seed.rotate_left(salt * 13) | 1),
                None => disk.crash(),
            }
        }
    }
}

pub struct SimNode {
    pub id: usize,
    /// The replica set it belongs to (its size and policy).
    pub cluster: Cluster,
    pub disks: Disks,
    /// The epoch file: written durably whenever it changes, so it survives a crash.
    pub epoch: u32,
    pub up: Option<Up>,
    /// History-store read transactions of the node's earlier starts.
    history_reads_before: u64,
    /// How far this node's wall clock is behind the simulation's time: it steps back
    /// (an operator or NTP), never forward.
    pub clock_behind_ns: u64,
    /// The journal's disk took damage at rest (a fault) since the node last started: a
    /// start the journal refuses is then expected, and repaired from a peer if it can be.
    pub rotted: bool,
    /// A bit of its history store's file rotted since the node was last rebuilt.
    pub history_rotted: bool,
    /// Starts refused because the history store failed its check.
    pub history_refusals: u64,
    /// A refused start being repaired: the damaged records fetched from peers.
    repair: Option<Repair>,
    /// The log the node held when it last stopped (the simulator's memory, not the
    /// node's): the stand-in for a checkpoint transfer when recovery set aside a damaged
    /// prefix its snapshot covers (see [`mirror`]).
    remembered: Vec<Held>,
    /// Rebuilt from empty disks and not yet caught up with a primary (a durable marker
    /// in the model): it may have held acknowledged inputs it no longer has, so it
    /// neither promises nor stands for promotion until a primary's heartbeat shows it
    /// holds everything that primary shipped. Viewstamped Replication's recovering
    /// state, which `tally` keeps as `DIR/RECOVERING` (docs/design.md §7a).
    pub recovering: bool,
    /// It served as primary under a policy that replies before its own flush
    /// (`tally`'s `DIR/UNFLUSHED-ACKS`, durable in the model): a start after a crash or a
    /// failed flush comes back recovering, since its journal may lack inputs it
    /// acknowledged (held by standbys only).
    pub acked_unflushed: bool,
    /// Its epoch file says it serves as primary (not fenced, not a standby): an operator
    /// may restart it with `tally serve`, as the primary of that epoch again.
    pub primary_on_disk: bool,
    /// Started without an epoch file (its disks were replaced): it asks its peers their
    /// epochs and follows no one until enough have answered (`tally`'s
    /// `Following::confirm_epoch`, with the count from the protocol core's
    /// `epoch_answers_needed`). Durable in the model, as `tally`'s marker file is; the
    /// answers are not.
    pub epoch_question: Option<EpochQuestion>,
    /// When this node last heard its primary (records or a heartbeat on the subscription
    /// it follows), promised a candidate, or started: what a peer's pre-vote asks
    /// (`tally`'s `Promoter::silence`).
    heard_primary_at: u64,
    /// The newest epoch a peer named in answer to a pre-vote (`tally`'s
    /// `Role::heard_of`): the next candidacy asks above it.
    highest_heard: u32,
    /// `--auto-promote-after-ms`, when the run models it.
    pub auto: Option<AutoPromote>,
}

/// How many times longer than usual an automatic candidate waits after its candidacy
/// failed (`tally`'s `promote::FAILED_CANDIDACY_BACKOFF`).
const FAILED_CANDIDACY_BACKOFF: u64 = crate::node::promote::FAILED_CANDIDACY_BACKOFF as u64;

/// The model of `tally`'s auto-promotion watch (`Promoter::watch`): after `after_ns` plus
/// a random part of it without hearing a primary, a standby asks a pre-vote, and only
/// when N − k nodes would promise does it stand for promotion.
pub struct AutoPromote {
    after_ns: u64,
    wait_ns: u64,
    attempted_at: Option<u64>,
    /// The pre-vote being asked, and when it gives up (once it carries, when the grace
    /// for a serving primary's veto ends).
    vote: Option<(PreVote, u64)>,
    /// It stood for promotion and has not yet become primary or given up.
    stood: bool,
}

impl AutoPromote {
    /// A watch with the timeout `after_ns`, whose first wait is `after_ns + extra_ns` (the
    /// random part, drawn by the caller).
    pub fn new(after_ns: u64, extra_ns: u64) -> AutoPromote {
        AutoPromote { after_ns, wait_ns: after_ns + extra_ns, attempted_at: None, vote: None, stood: false }
    }

    /// A start of the process: no pre-vote or candidacy of before survives it.
    fn restarted(&mut self) {
        self.vote = None;
        self.stood = false;
        self.attempted_at = None;
    }
}

/// The peers' epochs a node without one has heard so far, and when it last asked.
#[derive(Default)]
pub struct EpochQuestion {
    answers: BTreeMap<usize, u32>,
    asked_at: u64,
}

/// `tally`'s start-up repair (`node::repair`): the damaged range the journal names,
/// fetched from one peer after another until a copy chains on both sides.
struct Repair {
    range: DamagedRange,
    records: Vec<PeerRecord>,
    peer: usize,
    epoch: u32,
    asked_at: u64,
    /// Fetches sent: after [`REPAIR_ROUNDS`] rounds of every peer without a copy that
    /// chains, the operator rebuilds the node.
    asked: u64,
}

/// How many times each peer is asked for a repair before the operator gives up on the
/// journal and rebuilds the node from a checkpoint.
const REPAIR_ROUNDS: u64 = 3;

/// How a start went.
pub enum Started {
    /// Running, from the snapshot at this sequence (0: a full replay).
    Running(u64),
    /// Serving again as the primary of its epoch (`tally serve`), from that snapshot.
    Serving(u64),
    /// The journal refused damaged records that intact ones follow: fetching them.
    Repairing,
    /// The journal refused for a reason no peer's records can mend, or the history store
    /// failed its check: the node stays down, as `tally` refuses to start.
    Refused,
}

/// An input the primary acknowledged to a client, or (`committed_only`) the primary's
/// commit mark: the highest sequence its durability policy let pass, which is what its
/// sinks publish up to, whether or not a client was answered for it (a tick, a record
/// inherited from an older epoch).
#[derive(Clone, Debug)]
pub struct Acked {
    pub node: usize,
    pub epoch: u32,
    pub sequence: u64,
    pub held: Held,
    pub reply: Option<Reply>,
    pub committed_only: bool,
}

pub fn name(id: usize) -> String {
    format!("n{id}")
}

fn journal_config(recovery: RecoveryMode) -> JournalConfig {
    JournalConfig {
        // Small segments, so roll-overs happen in short runs; no spare thread: the
        // simulation is one thread.
        segment_bytes: 64 << 10,
        payload_bytes_max: 16 << 10,
        recovery,
        spare_at_fill_percent: None,
        on_flush_failure: stop_on_flush_failure,
        ..JournalConfig::new("sim")
    }
}

/// The panic payload of a node whose journal sync failed: the world catches it and takes
/// the node down.
pub struct FlushFailed;

thread_local! {
    /// The disks of the node the world is running now: a failed flush powers them off.
    static RUNNING: RefCell<Option<Disks>> = const { RefCell::new(None) };
}

/// Marks `disks` as those of the node the world runs next (`None`: no node); returns
/// the ones marked before.
pub fn running(disks: Option<Disks>) -> Option<Disks> {
    RUNNING.with(|running| std::mem::replace(&mut *running.borrow_mut(), disks))
}

/// The journal's flush-failure hook in the simulator. `tally` aborts the process
/// (`abort_on_flush_failure`: a failed sync is never retried), and an operator reboots
/// the machine after a disk error; here the node's disks lose power first, so nothing
/// the unwinding node writes afterwards reaches them, and the world catches the panic
/// and counts the node down.
fn stop_on_flush_failure(_failure: &FlushFailure) -> ! {
    RUNNING.with(|running| {
        if let Some(disks) = running.borrow().as_ref() {
            disks.crash(None);
        }
    });
    std::panic::panic_any(FlushFailed)
}

/// Applies one journal record as the business-logic thread and replay do (`tally`'s
/// `Deriving`: cold facts from the history store under the determinism rule, the
/// outcome-stream entry, the history rows).
fn apply_held(ledger: &mut Ledger, derived: &mut Derived, sequence: u64, held: &Held) -> Result<Option<Reply>, String> {
    let command = journal_codec::decode(held.operation, &held.payload).map_err(|error| error.to_string())?;
    let mut deriving = Deriving { outcomes: &mut derived.outcomes, history: &mut derived.history, history_from: 0 };
    Ok(deriving.apply(ledger, sequence, held.timestamp, &command))
}

fn position_of(journal: &Journal<MemStorage>) -> LogPosition {
    LogPosition {
        last_epoch: journal.last_epoch(),
        last_sequence: journal.last_sequence(),
        last_chain: journal.last_chain(),
    }
}

/// Every record the journal holds, as the node's mirror.
///
/// A journal may start after record 1: recovery set aside a segment with damage that the
/// snapshot it started from covers. Such a node can no longer ship those records; `tally`
/// sends a peer that needs them a checkpoint instead. The simulator has no checkpoint
/// transfer, so it fills the mirror's prefix from `remembered` (the log the node held
/// before it stopped), and only if that copy ends in the chain the journal's first
/// segment continues: the same history, which the snapshot holds the effect of.
fn mirror(journal: &Journal<MemStorage>, remembered: &[Held]) -> Result<Vec<Held>, String> {
    let mut log = Vec::new();
    if journal.last_sequence() == 0 {
        return Ok(log);
    }
    let mut reader = journal.reader(0).map_err(|error| error.to_string())?;
    let first = reader.next_sequence();
    if first > 1 {
        let continues = reader.chain_before().map_err(|error| error.to_string())?;
        let prefix = usize::try_from(first - 1).ok().and_then(|count| remembered.get(..count));
        match prefix {
            Some(prefix) if prefix.last().map(|held| held.chain) == Some(continues) => log.extend_from_slice(prefix),
            _ => {
                return Err(format!(
                    "the journal starts at record {first} and no copy of the records before it chains"
                ));
            }
        }
    }
    while let Some(record) = reader.next_record().map_err(|error| error.to_string())? {
        if record.sequence != log.len() as u64 + 1 {
            return Err(format!("the journal holds record {} after {}", record.sequence, log.len()));
        }
        log.push(Held {
            epoch: record.epoch,
            timestamp: record.timestamp,
            operation: record.operation,
            chain: record.chain,
            payload: record.payload.to_vec(),
        });
    }
    if log.len() as u64 != journal.last_sequence() {
        return Err(format!("read {} records, the journal ends at {}", log.len(), journal.last_sequence()));
    }
    Ok(log)
}

fn chain_at(log: &[Held], sequence: u64) -> Option<ChainHash> {
    match sequence {
        0 => Some([0; 16]),
        s => log.get(usize::try_from(s - 1).ok()?).map(|held| held.chain),
    }
}

fn records_of(log: &[Held], from: u64, to: u64) -> Vec<Record> {
    let last = log.len() as u64;
    (from.max(1)..=to.min(last))
        .take(RECORDS_PER_MESSAGE)
        .map(|sequence| {
            let held = &log[(sequence - 1) as usize];
            Record {
                sequence,
                epoch: held.epoch,
                timestamp: held.timestamp,
                operation: held.operation,
                chain: held.chain,
                payload: held.payload.clone(),
            }
        })
        .collect()
}

/// Appends a record to the journal, mirrors it and applies it to the ledger.
fn append_to(
    journal: &mut Journal<MemStorage>,
    ledger: &mut Ledger,
    log: &mut Vec<Held>,
    derived: &mut Derived,
    held: Held,
) -> Result<(u64, Option<Reply>), String> {
    let sequence =
        journal.append(held.epoch, held.timestamp, held.operation, &held.payload).map_err(|error| error.to_string())?;
    let held = Held { chain: journal.last_chain(), ..held };
    let reply = apply_held(ledger, derived, sequence, &held)?;
    log.push(held);
    Ok((sequence, reply))
}

impl Up {
    /// What `tally` does at a start: the newest snapshot that verifies (skipping damaged
    /// ones), checked against the history store; the journal opened after it (recovery);
    /// `node::recover` (replay into the snapshot's ledger through `Deriving`, history cut
    /// to the journal's end, the derived stores registered). The mirror holds every
    /// record. Follows as a standby of `epoch`, with the hot window `hot_window`.
    fn open(
        disks: &Disks,
        recovery: RecoveryMode,
        hot_window: (u64, u64),
        epoch: u32,
        now: u64,
        remembered: &[Held],
    ) -> Result<Up, String> {
        let store = SnapshotStore::open_on(disks.snapshots.directory()).map_err(|error| error.to_string())?;
        let restored = snapshots::load(&store).map_err(|error| format!("loading the newest snapshot: {error}"))?;
        let (history, history_start) = open_history(&disks.history).map_err(|error| error.to_string())?;
        let restored = recover::against_history(restored, history_start);
        let snapshot_sequence = restored.sequence;
        let config = JournalConfig { snapshot_sequence, ..journal_config(recovery) };
        let (journal, report) = Journal::open_on(disks.journal.clone(), &config).map_err(|error| error.to_string())?;
        let cut_tail = recover::cut_records(&report);
        let outcomes = OutcomeStream::open(disks.outcomes.clone(), OUTCOME_SEGMENT_BYTES, report.last_sequence)
            .map_err(|error| format!("opening the outcome stream: {error}"))?;
        let stores = Stores { history, history_start, outcomes, hot_window };
        let Recovered { ledger, outcomes, history, derived, .. } =
            recover::recover(&journal, report.replay_from, restored, &store, stores)
                .map_err(|error| format!("recovery: {error}"))?;
        let log = mirror(&journal, remembered)?;
        if ledger.sequence() != journal.last_sequence().max(snapshot_sequence) {
            return Err(format!(
                "replay reached sequence {} (snapshot at {snapshot_sequence}), the journal ends at {}",
                ledger.sequence(),
                journal.last_sequence()
            ));
        }
        let checkpoints =
            CheckpointWriter::new(store, Arc::new(PipelineStats::default()), derived, None, snapshot_sequence);
        let role = standby(epoch, position_of(&journal), now);
        Ok(Up { journal, ledger, log, role, derived: Derived { history, outcomes, checkpoints }, cut_tail })
    }

    /// Background work `tally` does on timers and its checkpoint writer's thread: the
    /// history store's durable commit, the outcome stream's sync, and now and then a
    /// copy of the state after the last applied record written and verified as a staged
    /// checkpoint, which becomes the recovery point once every derived store (history,
    /// outcomes, the latter capped at the journal's durable mark) holds its sequence. A
    /// checkpoint that fails to verify means the state is not a function of the image: a
    /// violation.
    fn background(&mut self, id: usize, ctx: &mut Ctx) {
        let derived = &mut self.derived;
        if ctx.rng.per_mille(HISTORY_DURABLE_PER_MILLE) {
            derived.history.flush();
        }
        if ctx.rng.per_mille(OUTCOMES_SYNC_PER_MILLE) {
            derived.outcomes.commit();
        }
        if derived.checkpoints.try_commit().is_some() {
            ctx.report.checkpoints += 1;
        }
        let sequence = self.ledger.sequence();
        if !ctx.rng.per_mille(CHECKPOINT_PER_MILLE)
            || derived.checkpoints.staged().is_some()
            || sequence <= derived.checkpoints.committed()
        {
            return;
        }
        if !derived.checkpoints.take(sequence, self.ledger.state_hash(), &self.ledger) {
            ctx.violation(
                Kind::Other,
                format!("n{id}: the checkpoint at sequence {sequence} failed to write or verify"),
            );
        }
    }

    /// The transfer `id` as this node holds it: hot, or else in its history store.
    pub fn lookup_transfer(&self, id: u128) -> Option<Transfer> {
        let mut found = Vec::new();
        self.ledger.lookup_transfers(&[id], &mut found);
        found.pop().or_else(|| self.derived.history.store.transfer(id).map(|stored| stored.transfer))
    }

    pub fn position(&self) -> LogPosition {
        position_of(&self.journal)
    }

    pub fn last_sequence(&self) -> u64 {
        self.log.len() as u64
    }

    /// The epoch this node serves as primary in, unless it is not a primary or fenced.
    pub fn primary_epoch(&self) -> Option<u32> {
        match &self.role {
            Role::Primary(primary) if primary.core.fenced().is_none() => Some(primary.core.epoch()),
            _ => None,
        }
    }

    pub fn is_candidate(&self) -> bool {
        matches!(self.role, Role::Candidate(_))
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Primary(_) => "primary",
            Role::Standby(_) => "standby",
            Role::Candidate(_) => "candidate",
        }
    }
}

fn standby(epoch: u32, position: LogPosition, now: u64) -> Role {
    Role::Standby(StandbyRole {
        follower: Follower::new(epoch, position),
        checkpoints: Checkpoints::default(),
        primary: None,
        stream: 0,
        confirmed: false,
        // Subscribe at the next tick.
        last_heard: now.saturating_sub(SILENCE_NS),
    })
}

impl PrimaryRole {
    fn new(epoch: u32, last_timestamp: u64, cluster: Cluster) -> PrimaryRole {
        PrimaryRole {
            core: Primary::new(epoch, cluster.replicas()),
            timestamps: Timestamps::after(last_timestamp),
            last_tick: 0,
            checkpoints: CheckpointSchedule::new(CHECKPOINT_INTERVAL),
            subscribers: BTreeMap::new(),
            streams: BTreeMap::new(),
            pending: Vec::new(),
            committed: 0,
        }
    }
}

impl SimNode {
    /// Runs the auto-promotion watch from `now` on (the process starts at `now`).
    pub fn set_auto(&mut self, auto: AutoPromote, now: u64) {
        self.auto = Some(auto);
        self.heard_primary_at = now;
    }

    /// A node whose journal is empty, started as the primary of epoch 1 or a standby.
    pub fn new(id: usize, primary: bool, hot_window: (u64, u64), cluster: Cluster) -> Result<SimNode, String> {
        let disks = Disks::default();
        let epoch = 1;
        let mut up = Up::open(&disks, RecoveryMode::TolerateTornTail, hot_window, epoch, 0, &[])?;
        if primary {
            up.role = Role::Primary(PrimaryRole::new(epoch, up.journal.last_timestamp(), cluster));
        }
        Ok(SimNode {
            id,
            cluster,
            disks,
            epoch,
            up: Some(up),
            history_reads_before: 0,
            clock_behind_ns: 0,
            rotted: false,
            history_rotted: false,
            history_refusals: 0,
            repair: None,
            remembered: Vec::new(),
            recovering: false,
            acked_unflushed: primary && !cluster.durability.flushes_locally(),
            primary_on_disk: primary,
            epoch_question: None,
            heard_primary_at: 0,
            highest_heard: 0,
            auto: None,
        })
    }

    /// Makes what the running node derived durable (outcome stream synced, history
    /// committed), as a clean stop would, so the end's checks read all of it.
    pub fn settle(&mut self) {
        if let Some(up) = self.up.as_mut() {
            up.derived.outcomes.commit();
            up.derived.history.flush();
        }
    }

    /// The node's outcome stream from its first entry to its last applied input, as a
    /// sink reads it; an error names a gap or damage.
    pub fn read_outcomes(&self) -> Result<Vec<Outcome>, String> {
        let last = self.up.as_ref().map_or(0, |up| up.ledger.sequence());
        let mut reader = StreamReader::new(self.disks.outcomes.clone(), 1);
        let mut read = Vec::new();
        while let Some(outcome) = reader.next(last).map_err(|error| error.to_string())? {
            read.push(outcome);
        }
        if read.len() as u64 != last {
            return Err(format!("the outcome stream ends at {} of {last}", read.len()));
        }
        Ok(read)
    }

    /// Read transactions of this node's history store, over all its starts.
    pub fn history_reads(&self) -> u64 {
        self.history_reads_before + self.up.as_ref().map_or(0, |up| up.derived.history.store.read_transactions())
    }

    /// Ends the running process (the caller says how), keeping its count of reads.
    fn stop(&mut self) -> Option<Up> {
        let up = self.up.take()?;
        self.primary_on_disk = up.primary_epoch().is_some();
        self.history_reads_before += up.derived.history.store.read_transactions();
        self.remembered.clone_from(&up.log);
        Some(up)
    }

    /// A hot window for a start, drawn from [`HOT_WINDOWS`].
    pub fn draw_hot_window(rng: &mut super::Rng) -> (u64, u64) {
        HOT_WINDOWS[rng.below(HOT_WINDOWS.len() as u64) as usize]
    }

    /// Power loss: unflushed writes are lost (some dirty sectors may reach the disk), on
    /// every disk of the node. The disks go first: what the node's destructors write
    /// afterwards comes from a process that died with the power and reaches nothing.
    pub fn crash(&mut self, writeback_seed: Option<u64>) {
        self.disks.crash(writeback_seed);
        self.repair = None;
        died(self.stop());
    }

    /// After a failed flush: the hook powered the disks off already; the process is gone.
    pub fn stopped_by_flush_failure(&mut self) {
        self.repair = None;
        died(self.stop());
    }

    /// After a panic inside a history store that rotted: the process is gone, and what it
    /// had not synced with it (the closing store may panic again).
    pub fn died_in_the_history_store(&mut self) {
        self.disks.crash(None);
        self.repair = None;
        let up = self.up.take();
        self.primary_on_disk = up.as_ref().is_some_and(|up| up.primary_epoch().is_some());
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(up)));
    }

    /// A bit of an entry in the newest outcome-stream segment rots on the disk of a stopped
    /// node: the next start's scan finds it, cuts the stream there and rebuilds the rest
    /// (`recover::against_outcomes` when the newest snapshot is past the cut). Only where
    /// `tally` claims to rebuild: an entry past the newest snapshot, or past an older one
    /// whose next record the journal holds, or any entry while the journal holds record 1;
    /// not while the journal itself waits to be found damaged at that start. Sealed
    /// segments are left alone: a start does not read them, and a rotted entry there is the
    /// gap `tally` does not repair (README, faults table).
    pub fn rot_outcomes(&mut self, pick: u64, bit: u8) -> bool {
        if self.up.is_some() || self.rotted {
            return false;
        }
        let disk = &self.disks.outcomes;
        let Some(newest) = disk.directory_names().into_iter().filter(|name| name.ends_with(".outcomes")).max() else {
            return false;
        };
        let Some(image) = disk.durable_image(&newest) else { return false };
        let mut entries = Vec::new();
        let mut offset = 0;
        while let Ok((header, length)) = tally_codecs::outcome::check_outcome(&image[offset..]) {
            entries.push((offset, length, header.sequence));
            offset += length;
        }
        let journal_first = self
            .disks
            .journal
            .directory_names()
            .iter()
            .filter_map(|name| tally_journal::parse_segment_name(name))
            .min()
            .unwrap_or(1);
        let snapshots =
            SnapshotStore::open_on(self.disks.snapshots.directory()).and_then(|store| store.list()).unwrap_or_default();
        // Cut at `sequence`, the stream ends just before it; the newest snapshot's next
        // record is always in the journal, so a cut past it counts too.
        let rebuildable = |sequence: u64| {
            snapshots
                .iter()
                .copied()
                .chain([0])
                .any(|snapshot| recover::rebuilds_outcomes(snapshot, sequence - 1, journal_first))
        };
        let candidates: Vec<&(usize, usize, u64)> =
            entries.iter().filter(|(_, _, sequence)| rebuildable(*sequence)).collect();
        let Some(&&(at, length, _)) = candidates.get((pick % candidates.len().max(1) as u64) as usize) else {
            return false;
        };
        let at = at + (pick >> 32) as usize % length;
        let damaged = disk.damage_durable(&newest, at, &[image[at] ^ (1 << (bit % 8))]);
        // The node is down: nothing is unsynced, and its next start reads the medium.
        disk.crash();
        damaged
    }

    /// The node's disks are replaced (a lost disk, a new machine): the process stops, and
    /// the node comes back with nothing, not even its epoch file, as `tally standby` on
    /// an empty directory does: recovering, and asking its peers' epochs before it follows
    /// anyone.
    pub fn lose_disks(&mut self) {
        self.disks.crash(None);
        self.repair = None;
        died(self.stop());
        self.primary_on_disk = false;
        self.disks = Disks::default();
        self.epoch = 0;
        self.rotted = false;
        self.history_rotted = false;
        self.remembered.clear();
        self.recovering = true;
        self.acked_unflushed = false;
        self.epoch_question = Some(EpochQuestion::default());
    }

    /// Whether the node is down repairing its journal (it starts when the repair is done).
    pub fn repairing(&self) -> bool {
        self.repair.is_some()
    }

    /// Damages one record of the journal that a later durable record follows, on the
    /// disk's durable image (rot on the medium, or a misdirected write landing on it): a
    /// flipped bit when `how` is even, else the bytes of an earlier record written over
    /// its start. The running process does not see it (its page cache is intact); the
    /// next start after a power loss does. Returns whether a record was damaged.
    pub fn rot_journal_record(&mut self, pick: u64, how: u64) -> bool {
        let Some(up) = self.up.as_ref() else { return false };
        let durable = up.journal.durable_sequence().min(up.log.len() as u64);
        if durable < 2 {
            return false;
        }
        let sequence = 1 + pick % (durable - 1);
        let held = &up.log[(sequence - 1) as usize];
        let Some(length) = tally_journal::record_bytes(held.payload.len()) else { return false };
        let disk = &self.disks.journal;
        for name in disk.directory_names().into_iter().filter(|name| name.ends_with(".seg")) {
            let Some(image) = disk.durable_image(&name) else { continue };
            let found = image.windows(held.chain.len()).enumerate().find_map(|(at, window)| {
                let start = at.checked_sub(32)?;
                (window == held.chain && image.get(start..start + 2) == Some(b"TJ")).then_some(start)
            });
            let Some(start) = found else { continue };
            if start + length > image.len() {
                return false;
            }
            let damaged = if how.is_multiple_of(2) {
                let at = start + (how >> 1) as usize % length;
                disk.damage_durable(&name, at, &[image[at] ^ (1 << ((how >> 32) % 8))])
            } else {
                // A misdirected write: an earlier record's header (or, as long as this
                // record, all of it) over this record's start.
                let Some(earlier) = sequence.checked_sub(1).filter(|&earlier| earlier >= 1) else { return false };
                let earlier = &up.log[(earlier - 1) as usize];
                let copied = if earlier.payload.len() == held.payload.len() { length } else { RECORD_HEADER_BYTES };
                let source = image.windows(earlier.chain.len()).enumerate().find_map(|(at, window)| {
                    let from = at.checked_sub(32)?;
                    (window == earlier.chain && image.get(from..from + 2) == Some(b"TJ")).then_some(from)
                });
                let Some(from) = source else { return false };
                let bytes = image[from..from + copied].to_vec();
                disk.damage_durable(&name, start, &bytes)
            };
            self.rotted |= damaged;
            return damaged;
        }
        false
    }

    /// Flips one bit of the history store's file in its durable image (the node reads it
    /// at its next start, once redb's cache and the disk's page cache are gone). Returns
    /// whether there was a file.
    pub fn rot_history(&mut self, offset: u64, bit: u8) -> bool {
        let disk = &self.disks.history;
        let Some(image) = disk.durable_image(FILE_NAME).filter(|image| !image.is_empty()) else { return false };
        let at = (offset % image.len() as u64) as usize;
        let damaged = disk.damage_durable(FILE_NAME, at, &[image[at] ^ (1 << (bit % 8))]);
        self.history_rotted |= damaged;
        damaged
    }

    /// Flips one byte (chosen by `offset`) of the newest snapshot file on this node's
    /// disk, cache and durable image alike. Returns whether there was one.
    pub fn damage_newest_snapshot(&mut self, offset: u64) -> bool {
        let snapshots = &self.disks.snapshots;
        let newest = snapshots.directory_names().into_iter().filter(|name| name.ends_with(".snap")).max();
        let Some(name) = newest else { return false };
        let Some(mut bytes) = snapshots.durable_image(&name).filter(|bytes| !bytes.is_empty()) else {
            return false;
        };
        let at = (offset % bytes.len() as u64) as usize;
        bytes[at] ^= 0x5A;
        snapshots.set_image(&name, bytes);
        true
    }

    /// What an operator does with a node whose journal cannot be repaired: clears its
    /// journal, snapshots and derived stores (as `tally`'s rejoin does when only the
    /// primary's checkpoint can help) and starts it as an empty standby, which catches up
    /// from a peer. The simulator has no checkpoint transfer: an empty standby fetches
    /// every record (no simulated journal is ever trimmed, apart from a set-aside prefix
    /// it remembers; see [`mirror`]). The epoch file stays.
    pub fn rebuild(&mut self, now: u64, hot_window: (u64, u64)) -> Result<(), String> {
        self.repair = None;
        self.heard_primary_at = now;
        if let Some(auto) = self.auto.as_mut() {
            auto.restarted();
        }
        drop(self.stop());
        self.primary_on_disk = false;
        self.disks = Disks::default();
        self.rotted = false;
        self.history_rotted = false;
        self.remembered.clear();
        self.recovering = true;
        self.up = Some(Up::open(&self.disks, RecoveryMode::TolerateTornTail, hot_window, self.epoch, now, &[])?);
        Ok(())
    }

    /// Restart after a crash: the newest snapshot, recovery and replay, then follow as a
    /// standby. Returns the sequence of the snapshot it started from (0: none, a full
    /// replay).
    /// `serve`: the operator starts it with `tally serve` (a node whose epoch file says
    /// primary); `Some(true)` if a peer it reaches holds a newer epoch (`tally serve` asks
    /// first: `cli::replica::fence_if_replaced`). `None`: `tally standby`.
    pub fn restart(&mut self, now: u64, hot_window: (u64, u64), serve: Option<bool>) -> Result<Started, String> {
        self.repair = None;
        self.heard_primary_at = now;
        if let Some(auto) = self.auto.as_mut() {
            auto.restarted();
        }
        if let Some(question) = self.epoch_question.as_mut() {
            *question = EpochQuestion::default();
        }
        let error = match Up::open(
            &self.disks,
            RecoveryMode::TolerateTornTail,
            hot_window,
            self.epoch,
            now,
            &self.remembered,
        ) {
            Ok(up) => {
                let from_snapshot = up.derived.checkpoints.committed();
                // As `tally`'s standby does (`rejoin::truncate_divergent_suffix`): records
                // cut from the tail may have been acknowledged; and an empty log may stand
                // for one that held acknowledged inputs (`Standby::open`).
                self.recovering |= up.cut_tail || up.journal.last_sequence() == 0;
                // As `tally`'s start does with `DIR/UNFLUSHED-ACKS` (the simulator's nodes
                // stop only by crashing or by a failed flush, never cleanly).
                self.recovering |= std::mem::take(&mut self.acked_unflushed);
                let mut up = up;
                // `tally serve` over a primary's directory: refused while recovering (the
                // operator starts it as a standby then), fenced by a newer epoch a peer
                // holds (it rejoins as a standby); otherwise the primary of its epoch again.
                if serve == Some(false) && self.primary_on_disk && !self.recovering {
                    up.role = Role::Primary(PrimaryRole::new(self.epoch, up.journal.last_timestamp(), self.cluster));
                    self.acked_unflushed = !self.cluster.durability.flushes_locally();
                    self.up = Some(up);
                    self.rotted = false;
                    return Ok(Started::Serving(from_snapshot));
                }
                self.up = Some(up);
                self.rotted = false;
                return Ok(Started::Running(from_snapshot));
            }
            // `--history-check on-open` refuses a store that rotted (a store left damaged
            // by a crash alone would be a bug in redb or in the disk model).
            Err(error) if self.history_rotted && error.contains("history store") => {
                self.history_refusals += 1;
                return Ok(Started::Refused);
            }
            Err(error) => error,
        };
        // A crash alone never makes a journal refuse to start; damage at rest may (also
        // damage found at an earlier start, in a segment set aside under a snapshot that
        // has since been lost).
        let set_aside = self.disks.journal.directory_names().iter().any(|name| name.ends_with(SET_ASIDE_SUFFIX));
        if !self.rotted && !set_aside {
            return Err(error);
        }
        // As `tally` does at start-up: damaged records that intact ones follow are
        // fetched from a peer (`node::repair`); anything else is refused.
        match damaged_range_on(&self.disks.journal) {
            Ok(Some(range)) => {
                let peer = (self.id + 1) % self.cluster.nodes;
                self.repair =
                    Some(Repair { range, records: Vec::new(), peer, epoch: self.epoch, asked_at: 0, asked: 0 });
                Ok(Started::Repairing)
            }
            Ok(None) | Err(_) => Ok(Started::Refused),
        }
    }

    /// A down node repairing its journal asks the next peer for the damaged records now
    /// and then (`tally` asks each peer in turn).
    fn ask_for_repair(&mut self, ctx: &mut Ctx) {
        let id = self.id;
        let Some(repair) = self.repair.as_mut() else { return };
        if ctx.now.saturating_sub(repair.asked_at) < FETCH_RETRY_NS {
            return;
        }
        if repair.asked >= REPAIR_ROUNDS * (self.cluster.nodes as u64 - 1) {
            // No peer holds a copy that chains (the damaged records were never
            // replicated, or every holder is away): the operator gives up on this journal.
            let hot_window = Self::draw_hot_window(ctx.rng);
            if let Err(error) = self.rebuild(ctx.now, hot_window) {
                ctx.violation(Kind::RecoveryFailed, format!("n{id}: rebuilding from empty disks failed: {error}"));
            }
            ctx.report.rebuilt += 1;
            return;
        }
        repair.asked += 1;
        if repair.asked_at != 0 {
            repair.peer = (repair.peer + 1) % self.cluster.nodes;
            if repair.peer == id {
                repair.peer = (repair.peer + 1) % self.cluster.nodes;
            }
        }
        repair.asked_at = ctx.now;
        repair.records.clear();
        let fetch = Message::Fetch { epoch: repair.epoch, from: repair.range.first, to: repair.range.last };
        ctx.send(Addr::Node(id), Addr::Node(repair.peer), Payload::peer(&fetch));
    }

    /// A peer's answer to the repair's fetch: once it covers the damaged range, the copy
    /// goes to the journal (`repair_on`, which writes it only if it chains on both sides)
    /// and the node starts.
    fn on_repair_answer(&mut self, from: usize, message: Message, ctx: &mut Ctx) {
        let Some(repair) = self.repair.as_mut() else { return };
        if from != repair.peer {
            return;
        }
        match message {
            Message::NewerEpoch { epoch } if epoch > repair.epoch => {
                // Asked again in that epoch: the copy is checked by its chain, not by who
                // sent it.
                repair.epoch = epoch;
                repair.asked_at = 0;
            }
            Message::Records { records, .. } => {
                for record in records {
                    let next = repair.range.first + repair.records.len() as u64;
                    if record.sequence != next || record.sequence > repair.range.last {
                        continue;
                    }
                    repair.records.push(peer_record(record));
                }
                if repair.range.first + repair.records.len() as u64 <= repair.range.last {
                    return;
                }
                match repair_on(&self.disks.journal, &repair.records) {
                    Ok(_) => {
                        ctx.report.journal_repairs += 1;
                        let hot_window = Self::draw_hot_window(ctx.rng);
                        match self.restart(ctx.now, hot_window, None) {
                            Ok(Started::Running(_) | Started::Serving(_)) => {}
                            Ok(Started::Repairing) => {}
                            // The repaired records are fine, but the journal holds other
                            // damage no peer's records can mend (a last record rotted below
                            // the durable mark with nothing after it, seed 21096), or a
                            // segment set aside earlier under a snapshot that has since
                            // rotted leaves replay without its start: as for a first start
                            // refused with nothing to repair, the operator rebuilds the node
                            // (`tally rebuild`).
                            Ok(Started::Refused) => {
                                ctx.report.journal_refused += 1;
                                ctx.report.rebuilt += 1;
                                let hot_window = Self::draw_hot_window(ctx.rng);
                                if let Err(error) = self.rebuild(ctx.now, hot_window) {
                                    ctx.violation(
                                        Kind::RecoveryFailed,
                                        format!("n{}: rebuilding from empty disks failed: {error}", self.id),
                                    );
                                }
                            }
                            Err(error) => ctx.violation(
                                Kind::RecoveryFailed,
                                format!("n{}: start after a repair failed: {error}", self.id),
                            ),
                        }
                    }
                    Err(_) => {
                        // This peer's history differs there: ask the next one.
                        ctx.report.journal_repair_copies_refused += 1;
                        repair.records.clear();
                        repair.asked_at = 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Cuts this node's log back to `keep` records (the suffix after it diverged from the
    /// primary's), as `tally`'s rejoin does (snapshots past `keep` go too; replay cuts the
    /// history store and the outcome stream), and follows again with the same hot window.
    fn truncate_to(&mut self, keep: u64, ctx: &mut Ctx) -> Result<(), String> {
        let Some(up) = self.stop() else { return Ok(()) };
        // As `tally`'s rejoin: a common prefix this node cannot rebuild from its own
        // snapshots and journal leaves only the primary's checkpoint (here: a start from
        // empty disks).
        let oldest_held = up.journal.segment_first_sequences().first().copied().unwrap_or(1);
        let store = SnapshotStore::open_on(self.disks.snapshots.directory()).map_err(|error| error.to_string())?;
        let snapshots = store.list().map_err(|error| error.to_string())?;
        let keep = if rejoin::needs_checkpoint(keep, oldest_held, &snapshots) { 0 } else { keep };
        let window = up.ledger.hot_window();
        let hot_window = (window.inputs(), window.events());
        // A clean stop: the journal closes, the derived stores' destructors make what
        // they hold durable.
        let Up { journal, derived, .. } = up;
        journal.close();
        drop(derived);
        // As `tally`'s rejoin: the base replay starts from is the newest snapshot at or below
        // `keep` that verifies (seed 11661: the one listed there had rotted).
        let keep = if keep > 0 {
            store.remove_newer_than(keep).map_err(|error| error.to_string())?;
            let base = snapshots::load(&store).map_err(|error| error.to_string())?.sequence;
            if rejoin::needs_checkpoint(keep, oldest_held, &[base]) { 0 } else { keep }
        } else {
            keep
        };
        let recovery = if keep == 0 {
            // Nothing in common: start from empty disks (a bootstrap), recovering as
            // `tally`'s `clear_for_checkpoint` marks it: the log it throws away may hold
            // inputs it acknowledged that the primary's log has and other promisers lack.
            self.disks = Disks::default();
            self.rotted = false;
            self.recovering = true;
            RecoveryMode::TolerateTornTail
        } else {
            RecoveryMode::TruncateAt(keep)
        };
        match Up::open(&self.disks, recovery, hot_window, self.epoch, ctx.now, &self.remembered) {
            Ok(up) => {
                self.up = Some(up);
                ctx.report.truncations += 1;
                Ok(())
            }
            // Records damaged at rest below `keep`, which the open reads from the disk
            // since the journal's start syncs its last segment and drops it from the page
            // cache (2026-12-08; before, the clean reopen read the cache and never saw the
            // rot). `tally`'s rejoin opens the journal repairing it from a peer before it
            // truncates (`rejoin::truncate_divergent_suffix`, `open_repairing`): here the
            // node starts again as after a stop, which repairs (or is refused and rebuilt
            // by the operator), and truncates at the primary's next refusal.
            Err(_) if self.rotted && keep > 0 => self.start_over_damage(ctx),
            Err(error) => Err(error),
        }
    }

    /// A start of this stopped node over a journal that rotted, as [`SimNode::restart`]
    /// with the operator's rebuild when the start is refused.
    fn start_over_damage(&mut self, ctx: &mut Ctx) -> Result<(), String> {
        let hot_window = Self::draw_hot_window(ctx.rng);
        ctx.report.restarts += 1;
        match self.restart(ctx.now, hot_window, None)? {
            Started::Running(_) | Started::Serving(_) | Started::Repairing => Ok(()),
            Started::Refused => {
                ctx.report.journal_refused += 1;
                ctx.report.rebuilt += 1;
                let hot_window = Self::draw_hot_window(ctx.rng);
                self.rebuild(ctx.now, hot_window)
            }
        }
    }

    /// An operator asks this node to become primary of the next epoch.
    pub fn promote(&mut self, force: bool, ctx: &mut Ctx) -> Result<(), String> {
        let Some(up) = self.up.as_mut() else { return Err("down".into()) };
        if !matches!(up.role, Role::Standby(_)) {
            return Err("not a standby".into());
        }
        if holds_back(self.recovering) && !force {
            return Err("rebuilt, not yet caught up with a primary".into());
        }
        // As `tally promote` does: the smallest epoch above every one this node knows that
        // it owns (each epoch has one owner, its index modulo the set's size), persisted
        // before anyone is asked, so two promotions never share an epoch.
        let known = self.epoch.max(self.highest_heard);
        let epoch = candidate_epoch(known, self.id, self.cluster.nodes).ok_or("no epoch is left")?;
        self.epoch = epoch;
        let own = up.position();
        let (election, prepare) = Election::start(epoch, own, self.cluster.nodes, self.cluster.replicas());
        up.role = Role::Candidate(CandidateRole {
            election,
            force,
            recovering: holds_back(self.recovering),
            deadline: ctx.now + PROMOTE_TIMEOUT_NS,
            decision: None,
            short: false,
            fetched_at: 0,
        });
        for peer in (0..self.cluster.nodes).filter(|&peer| peer != self.id) {
            ctx.send(Addr::Node(self.id), Addr::Node(peer), Payload::peer(&prepare));
        }
        Ok(())
    }

    /// The auto-promotion watch, once per tick on a standby: a pre-vote after the
    /// randomised silence, a promotion once it carries, nothing when it does not.
    fn auto_promote(&mut self, ctx: &mut Ctx) {
        let (id, nodes, replicas) = (self.id, self.cluster.nodes, self.cluster.replicas());
        let standby = self.up.as_ref().is_some_and(|up| matches!(up.role, Role::Standby(_)));
        let primary = self.up.as_ref().is_some_and(|up| matches!(up.role, Role::Primary(_)));
        let standing = standby && self.epoch_question.is_none() && !holds_back(self.recovering);
        let silence = ctx.now.saturating_sub(self.heard_primary_at);
        let Some(auto) = self.auto.as_mut() else { return };
        if auto.stood && (standby || primary) {
            auto.stood = false;
            if standby {
                // The candidacy failed (too few promises, or this log diverged from the one
                // it had to take): as `tally`'s watch does, the next one waits longer, so
                // that a node with a better log stands first.
                auto.attempted_at = Some(ctx.now);
                auto.wait_ns = (auto.after_ns + ctx.rng.below(auto.after_ns.max(1))) * FAILED_CANDIDACY_BACKOFF;
            }
        }
        if !standing {
            auto.vote = None;
            return;
        }
        if let Some((vote, deadline)) = auto.vote.as_mut() {
            let grace = ctx.now + PRE_VOTE_VETO_GRACE.as_nanos() as u64;
            if vote.carried() && grace < *deadline {
                // It carries: the answers not yet in get `tally`'s grace for a veto.
                *deadline = grace;
                return;
            }
            if vote.carried() && ctx.now >= *deadline && silence < auto.after_ns {
                // As `tally`'s watch: a primary heard (or a promise made) during the
                // pre-vote ends the attempt before anything is recorded.
                auto.vote = None;
                ctx.report.pre_votes_held_back += 1;
            } else if vote.carried() && ctx.now >= *deadline {
                auto.vote = None;
                ctx.report.auto_promotions_asked += 1;
                auto.stood = true;
                if self.promote(false, ctx).is_err()
                    && let Some(auto) = self.auto.as_mut()
                {
                    auto.stood = false;
                }
            } else if vote.vetoed() || (!vote.carried() && ctx.now >= *deadline) {
                auto.vote = None;
                ctx.report.pre_votes_held_back += 1;
            }
            return;
        }
        if silence < auto.wait_ns || auto.attempted_at.is_some_and(|at| ctx.now.saturating_sub(at) < auto.wait_ns) {
            return;
        }
        let Some(epoch) = candidate_epoch(self.epoch.max(self.highest_heard), id, nodes) else { return };
        auto.attempted_at = Some(ctx.now);
        auto.wait_ns = auto.after_ns + ctx.rng.below(auto.after_ns.max(1));
        let after = std::time::Duration::from_nanos(auto.after_ns);
        let Some(own) = self.up.as_ref().map(|up| position_of(&up.journal)) else { return };
        let (vote, message) = PreVote::start(epoch, own, nodes, replicas, after);
        auto.vote = Some((vote, ctx.now + auto.after_ns));
        ctx.report.pre_votes += 1;
        for peer in (0..nodes).filter(|&peer| peer != id) {
            ctx.send(Addr::Node(id), Addr::Node(peer), Payload::peer(&message));
        }
    }

    /// A client's request.
    pub fn on_request(&mut self, client: usize, request_id: u64, request: Request, ctx: &mut Ctx) {
        let from = Addr::Node(self.id);
        let not_primary = Payload::Answer { request_id, answer: Answer::NotPrimary };
        let Some(up) = self.up.as_mut() else { return };
        let Role::Primary(primary) = &mut up.role else {
            ctx.send(from, Addr::Client(client), not_primary);
            return;
        };
        if primary.core.fenced().is_some() {
            ctx.send(from, Addr::Client(client), not_primary);
            return;
        }
        let command = Command::Request(request);
        let timestamp = primary.timestamps.next(ctx.now.saturating_sub(self.clock_behind_ns));
        let held = Held::of(&command, primary.core.epoch(), timestamp);
        match append_to(&mut up.journal, &mut up.ledger, &mut up.log, &mut up.derived, held) {
            Ok((sequence, reply)) => primary.pending.push(Pending { sequence, client, request_id, reply }),
            Err(error) => {
                ctx.violation(Kind::Other, format!("n{}: the primary could not append an input: {error}", self.id))
            }
        }
    }

    /// Timers and background work: group commit, shipping, heartbeats, checkpoints,
    /// releasing replies, asking peers' epochs, re-subscribing, election deadlines.
    pub fn tick(&mut self, ctx: &mut Ctx) {
        let id = self.id;
        let clock_behind_ns = self.clock_behind_ns;
        let me = Addr::Node(id);
        let node_epoch = self.epoch;
        if self.up.is_none() {
            self.ask_for_repair(ctx);
            return;
        }
        if self.auto.is_some() {
            self.auto_promote(ctx);
        }
        let ships_before_flush = crate::node::ship::ships_before_flush(self.cluster.durability);
        let Some(up) = self.up.as_mut() else { return };
        if ctx.rng.per_mille(400) {
            up.journal.flush();
        }
        up.background(id, ctx);
        let mut become_primary = None;
        match &mut up.role {
            Role::Primary(primary) => {
                let epoch = primary.core.epoch();
                if primary.core.fenced().is_some() {
                    return;
                }
                // The ticker: a tick (a journaled input) once the earliest pending
                // deadline has passed on this node's clock.
                let wall_ns = ctx.now.saturating_sub(clock_behind_ns);
                if tick_due(up.ledger.next_expiry(), primary.last_tick, primary.timestamps.peek(wall_ns)) {
                    let timestamp = primary.timestamps.next(wall_ns);
                    let held = Held::of(&Command::Tick, epoch, timestamp);
                    match append_to(&mut up.journal, &mut up.ledger, &mut up.log, &mut up.derived, held) {
                        Ok(_) => {
                            primary.last_tick = timestamp;
                            ctx.report.ticks += 1;
                        }
                        Err(error) => {
                            ctx.violation(Kind::Other, format!("n{id}: the primary could not append a tick: {error}"))
                        }
                    }
                }
                // As `tally`'s shipper (`ship::shipping_limit`): before the flush only where
                // the policy lets it.
                let appended = up.log.len() as u64;
                let last = if ships_before_flush { appended } else { up.journal.durable_sequence().min(appended) };
                let heartbeat = ctx.rng.per_mille(100);
                let mut broken: Vec<usize> =
                    primary.subscribers.keys().copied().filter(|&standby| ctx.connection_broke(id, standby)).collect();
                for (&standby, next) in &mut primary.subscribers {
                    if broken.contains(&standby) {
                        continue;
                    }
                    let stream = primary.streams.get(&standby).copied().unwrap_or(0);
                    let mut sent = true;
                    if *next > last && heartbeat {
                        let beat = Message::Records { epoch, records: Vec::new() };
                        sent &= ctx.send(me, Addr::Node(standby), Payload::on_stream(&beat, stream));
                    }
                    while sent && *next <= last {
                        let records = records_of(&up.log, *next, last);
                        *next += records.len() as u64;
                        let message = Message::Records { epoch, records };
                        sent &= ctx.send(me, Addr::Node(standby), Payload::on_stream(&message, stream));
                    }
                    if !sent {
                        broken.push(standby);
                    }
                }
                // A lost message (dropped, or on a link cut before it arrived) is a broken
                // connection: the shipping to that standby ends (no more heartbeats), so it
                // falls silent and subscribes again. Without this a standby kept alive by
                // heartbeats would wait forever for records lost after its last one.
                for standby in broken {
                    primary.subscribers.remove(&standby);
                }
                // `ask_epochs`: ask every peer its epoch with an empty fetch (a newer one
                // answers `NewerEpoch`). `tally` asks while some peer does not follow; the
                // simulator does not track live connections, so it asks now and then.
                if ctx.rng.per_mille(30) {
                    let ask = Message::Fetch { epoch, from: 1, to: 0 };
                    for peer in (0..self.cluster.nodes).filter(|&peer| peer != id) {
                        ctx.send(me, Addr::Node(peer), Payload::peer(&ask));
                    }
                }
                if let Some(checkpoint) = primary.checkpoints.due(epoch, up.ledger.sequence(), up.ledger.state_hash()) {
                    for &standby in primary.subscribers.keys() {
                        let stream = primary.streams.get(&standby).copied().unwrap_or(0);
                        ctx.send(me, Addr::Node(standby), Payload::on_stream(&checkpoint, stream));
                    }
                }
                let released = self.cluster.durability.passed(
                    last,
                    up.journal.durable_sequence(),
                    primary.core.replicated_watermark(),
                );
                // The commit mark, checked like an acknowledgement: whatever it covers must
                // stay in every later primary's log (the sinks publish it).
                if released > primary.committed
                    && let Some(held) = usize::try_from(released - 1).ok().and_then(|index| up.log.get(index))
                {
                    primary.committed = released;
                    let held = held.clone();
                    ctx.acked.push(Acked {
                        node: id,
                        epoch,
                        sequence: released,
                        held,
                        reply: None,
                        committed_only: true,
                    });
                }
                #[cfg(feature = "sim-bugs")]
                let released = if ctx.bug(Bug::AckBeforeDurable) { last } else { released };
                let (done, waiting): (Vec<Pending>, Vec<Pending>) =
                    std::mem::take(&mut primary.pending).into_iter().partition(|pending| pending.sequence <= released);
                primary.pending = waiting;
                for pending in done {
                    let held = up.log[(pending.sequence - 1) as usize].clone();
                    let acked = Acked {
                        node: id,
                        epoch,
                        sequence: pending.sequence,
                        held,
                        reply: pending.reply.clone(),
                        committed_only: false,
                    };
                    ctx.acked.push(acked);
                    if let Some(reply) = pending.reply {
                        let answer = Payload::Answer { request_id: pending.request_id, answer: Answer::Done(reply) };
                        ctx.send(me, Addr::Client(pending.client), answer);
                    }
                }
            }
            // Without an epoch: ask the peers theirs now and then; follow no one yet.
            Role::Standby(_) if self.epoch_question.is_some() => {
                if let Some(question) = self.epoch_question.as_mut()
                    && ctx.now.saturating_sub(question.asked_at) >= EPOCH_ASK_NS
                {
                    question.asked_at = ctx.now;
                    // `rejoin::peer_epoch`: an empty fetch in epoch 0.
                    let ask = Message::Fetch { epoch: 0, from: 1, to: 0 };
                    for peer in (0..self.cluster.nodes).filter(|&peer| peer != id) {
                        ctx.send(me, Addr::Node(peer), Payload::peer(&ask));
                    }
                }
            }
            Role::Standby(standby) => {
                if let Some(primary) = standby.primary
                    && ctx.connection_broke(id, primary)
                {
                    // A lost acknowledgement is a broken connection: subscribe again.
                    standby.last_heard = 0;
                }
                let durable = up.journal.durable_sequence();
                #[cfg(feature = "sim-bugs")]
                let durable = if ctx.bug(Bug::StandbyAcksAppended) { up.log.len() as u64 } else { durable };
                if standby.confirmed
                    && let Some(primary) = standby.primary
                    && let Some(ack) = standby.follower.durable(durable)
                {
                    ctx.send(me, Addr::Node(primary), Payload::on_stream(&ack, standby.stream));
                }
                if ctx.now.saturating_sub(standby.last_heard) >= SILENCE_NS {
                    // Ask the last primary again, or someone else.
                    let target = match standby.primary {
                        Some(primary) if ctx.rng.per_mille(500) => primary,
                        _ => (id + 1 + ctx.rng.below(self.cluster.nodes as u64 - 1) as usize) % self.cluster.nodes,
                    };
                    standby.follower = Follower::new(node_epoch, position_of(&up.journal));
                    standby.checkpoints = Checkpoints::default();
                    standby.primary = Some(target);
                    standby.confirmed = false;
                    standby.last_heard = ctx.now;
                    standby.stream = ctx.rng.next() | 1;
                    let subscribe = standby.follower.subscribe(&name(id));
                    ctx.send(me, Addr::Node(target), Payload::on_stream(&subscribe, standby.stream));
                }
            }
            Role::Candidate(candidate) => {
                if candidate.decision.is_none() {
                    let decision = match candidate.election.decision() {
                        Some(decision) => Some((decision, 0)),
                        None if ctx.now < candidate.deadline => None,
                        None if candidate.force => Some(candidate.election.force()),
                        None => {
                            ctx.report.promotions_refused += 1;
                            up.role = standby(node_epoch, position_of(&up.journal), ctx.now);
                            return;
                        }
                    };
                    if let Some((decision, missing)) = decision {
                        // Nothing fetched yet: this is the log the candidate decided with.
                        // One that holds more records of an older epoch than the decided
                        // log must not serve (`tally` refuses the same way in `catch_up`).
                        if decision.check_own(position_of(&up.journal)).is_err() {
                            ctx.report.promotions_refused += 1;
                            ctx.report.promotions_refused_diverged += 1;
                            up.role = standby(node_epoch, position_of(&up.journal), ctx.now);
                            return;
                        }
                        candidate.short = missing > 0 || candidate.recovering;
                        candidate.decision = Some(decision);
                    }
                }
                let Some(decision) = candidate.decision.clone() else { return };
                let own = up.log.len() as u64;
                if own >= decision.target.last_sequence || decision.source.is_none() {
                    become_primary = Some((decision.epoch, candidate.short));
                } else if ctx.now >= candidate.deadline.saturating_add(PROMOTE_TIMEOUT_NS) {
                    ctx.report.promotions_refused += 1;
                    up.role = standby(node_epoch, position_of(&up.journal), ctx.now);
                    return;
                } else if ctx.now.saturating_sub(candidate.fetched_at) >= FETCH_RETRY_NS
                    && let Some(source) = decision.source.as_deref().and_then(node_of)
                {
                    candidate.fetched_at = ctx.now;
                    let to = decision.target.last_sequence;
                    let fetch = Message::Fetch { epoch: decision.epoch, from: own.max(1), to };
                    ctx.send(me, Addr::Node(source), Payload::peer(&fetch));
                }
            }
        }
        if let Some((epoch, short)) = become_primary {
            // Only a forced candidate that really serves makes its epoch one forced short
            // of the rule (one that timed out fetching, or was refused as diverged, forced
            // nothing).
            if short {
                ctx.report.forced_short.push(epoch);
            }
            up.journal.flush();
            up.role = Role::Primary(PrimaryRole::new(epoch, up.journal.last_timestamp(), self.cluster));
            ctx.report.promotions += 1;
            ctx.promoted.push((id, epoch));
            self.acked_unflushed = !self.cluster.durability.flushes_locally();
            // Forced, a recovering node's log is the history from here on, and its epoch
            // its own (`tally`'s `Role::clear_recovering`).
            self.recovering = false;
            self.epoch_question = None;
        }
    }

    /// A replication message from node `from`.
    /// `stream` is the subscription the message belongs to (0: none).
    pub fn on_peer(&mut self, from: usize, stream: u64, bytes: &[u8], ctx: &mut Ctx) {
        let message = match super::net::decode_peer(bytes) {
            Ok(message) => message,
            Err(error) => {
                ctx.violation(
                    Kind::Other,
                    format!("n{}: a replication frame from n{from} did not decode: {error}", self.id),
                );
                return;
            }
        };
        let id = self.id;
        let me = Addr::Node(id);
        if self.up.is_none() {
            self.on_repair_answer(from, message, ctx);
            return;
        }
        let Some(up) = self.up.as_mut() else { return };
        let position = position_of(&up.journal);
        // A standby without an epoch reads its peers' answers (on `tally`'s question
        // connection; here, outside any subscription).
        if stream == 0
            && matches!(up.role, Role::Standby(_))
            && let Some(question) = self.epoch_question.as_mut()
        {
            let answer = match &message {
                Message::NewerEpoch { epoch } => Some(*epoch),
                Message::Records { epoch, records } if records.is_empty() => Some(*epoch),
                _ => None,
            };
            if let Some(epoch) = answer {
                question.answers.insert(from, epoch);
                if question.answers.len() >= epoch_answers_needed(self.cluster.replicas(), self.cluster.nodes - 1) {
                    let highest = question.answers.values().copied().max().unwrap_or(0);
                    self.epoch = self.epoch.max(highest);
                    self.epoch_question = None;
                    up.role = standby(self.epoch, position, ctx.now);
                    ctx.report.epochs_confirmed += 1;
                }
                return;
            }
        }
        // Messages every role answers the same way.
        match &message {
            Message::PreVote { epoch, after_ms, position: candidate } => {
                let contact = match &up.role {
                    Role::Primary(primary) if primary.core.fenced().is_none() => PrimaryContact::Serving,
                    _ => PrimaryContact::Silent(std::time::Duration::from_nanos(
                        ctx.now.saturating_sub(self.heard_primary_at),
                    )),
                };
                let after = std::time::Duration::from_millis(u64::from(*after_ms));
                let stands = self.auto.is_some();
                let recovering = self.recovering;
                let answer = on_pre_vote(self.epoch, position, *epoch, *candidate, recovering, stands, contact, after);
                ctx.send(me, Addr::Node(from), Payload::peer(&answer));
                return;
            }
            // A peer in a newer epoch refused the pre-vote: the next one asks above it.
            Message::NewerEpoch { epoch }
                if stream == 0 && self.auto.as_ref().is_some_and(|auto| auto.vote.is_some()) =>
            {
                self.highest_heard = self.highest_heard.max(*epoch);
            }
            Message::PreVoteGranted { .. } | Message::PrimaryServing { .. } => {
                if let Some((vote, _)) = self.auto.as_mut().and_then(|auto| auto.vote.as_mut()) {
                    vote.on_message(&name(from), &message);
                }
                return;
            }
            Message::Prepare { epoch } => {
                // A recovering node refuses: the candidate counts only the nodes that still
                // hold what they held.
                match on_prepare(self.epoch, position, *epoch, self.recovering) {
                    Prepared::Promise { persist_epoch, reply } => {
                        self.epoch = persist_epoch;
                        // As `tally`'s `note_promise`: the candidate is about to serve.
                        self.heard_primary_at = ctx.now;
                        // A promise ends whatever this node did in an older epoch. A
                        // standby keeps its connection, but refuses older epochs on it.
                        up.role = match std::mem::replace(&mut up.role, standby(persist_epoch, position, ctx.now)) {
                            Role::Standby(mut following) => {
                                following.follower = Follower::new(persist_epoch, position);
                                following.checkpoints = Checkpoints::default();
                                // No acknowledgement in the new epoch on this connection
                                // until the primary sends records on it again: `tally` ends
                                // the old connection at its next message. Seed 5867: the
                                // primary this node followed crashed, lost the record it
                                // had shipped here, and became primary of the promised
                                // epoch; this node acknowledged that record in the new
                                // epoch and the primary counted it for its own, other
                                // record at that sequence.
                                following.confirmed = false;
                                Role::Standby(following)
                            }
                            Role::Primary(_) => {
                                ctx.report.fenced += 1;
                                standby(persist_epoch, position, ctx.now)
                            }
                            Role::Candidate(_) => standby(persist_epoch, position, ctx.now),
                        };
                        ctx.send(me, Addr::Node(from), Payload::peer(&reply));
                    }
                    Prepared::Refuse(reply) => {
                        ctx.send(me, Addr::Node(from), Payload::peer(&reply));
                    }
                }
                return;
            }
            Message::Fetch { epoch, from: first, to } => {
                let reply = if *epoch < self.epoch {
                    Message::NewerEpoch { epoch: self.epoch }
                } else if first > to {
                    // An empty range asks this node's epoch (`peers.rs`'s `fetch`).
                    Message::Records { epoch: self.epoch, records: Vec::new() }
                } else {
                    Message::Records { epoch: self.epoch, records: records_of(&up.log, *first, *to) }
                };
                ctx.send(me, Addr::Node(from), Payload::peer(&reply));
                return;
            }
            _ => {}
        }
        let mut records_for_standby = None;
        match &mut up.role {
            Role::Primary(primary) => {
                let outcome = match message {
                    Message::Subscribe { epoch, position, .. } => primary.core.on_subscribe(epoch).map(|()| {
                        let matches = position.last_sequence <= up.log.len() as u64
                            && chain_at(&up.log, position.last_sequence) == Some(position.last_chain);
                        if matches {
                            // A new connection: losses on an older one no longer matter.
                            ctx.connection_broke(id, from);
                            primary.subscribers.insert(from, position.last_sequence + 1);
                            primary.streams.insert(from, stream);
                        } else {
                            primary.subscribers.remove(&from);
                            let refused = Message::Diverged { reason: "diverged".into() };
                            ctx.send(me, Addr::Node(from), Payload::on_stream(&refused, stream));
                        }
                    }),
                    // An acknowledgement counts only on the subscription it belongs to.
                    Message::Ack { epoch, durable_sequence } if primary.streams.get(&from) == Some(&stream) => {
                        primary.core.on_ack(&name(from), epoch, durable_sequence).map(|_| ())
                    }
                    Message::Ack { epoch, .. } => primary.core.check_epoch(epoch),
                    Message::NewerEpoch { epoch }
                    | Message::Records { epoch, .. }
                    | Message::Checkpoint { epoch, .. }
                    | Message::Promise { epoch, .. } => primary.core.check_epoch(epoch),
                    _ => Ok(()),
                };
                if outcome.is_err() {
                    // Fenced: unacknowledged replies are never sent; rejoin as a standby.
                    ctx.report.fenced += 1;
                    up.role = standby(self.epoch, position, ctx.now);
                }
            }
            Role::Candidate(candidate) => match message {
                Message::Promise { .. } | Message::NewerEpoch { .. } => {
                    if candidate.election.on_message(&name(from), &message).is_err() {
                        ctx.report.promotions_refused += 1;
                        up.role = standby(self.epoch, position, ctx.now);
                    }
                }
                Message::Records { records, .. } => {
                    let Some(decision) = candidate.decision.clone() else { return };
                    if decision.source.as_deref().and_then(node_of) != Some(from) {
                        return;
                    }
                    for record in records {
                        let own = up.log.len() as u64;
                        if record.sequence <= own {
                            if record.sequence == own && chain_at(&up.log, own) != Some(record.chain) {
                                // This log diverges from the source's: the real `promote`
                                // refuses ("promote the source instead").
                                ctx.report.promotions_refused += 1;
                                up.role = standby(self.epoch, position, ctx.now);
                                return;
                            }
                            continue;
                        }
                        if record.sequence != own + 1 || record.sequence > decision.target.last_sequence {
                            break;
                        }
                        let held = Held {
                            epoch: record.epoch,
                            timestamp: record.timestamp,
                            operation: record.operation,
                            chain: [0; 16],
                            payload: record.payload,
                        };
                        match append_to(&mut up.journal, &mut up.ledger, &mut up.log, &mut up.derived, held) {
                            Ok(_) if up.journal.last_chain() == record.chain => {}
                            Ok(_) => {
                                ctx.anomaly(format!("n{id}: fetched record {} does not chain", record.sequence));
                                return;
                            }
                            Err(error) => {
                                ctx.anomaly(format!("n{id}: fetched record {}: {error}", record.sequence));
                                return;
                            }
                        }
                    }
                    up.journal.flush();
                }
                _ => {}
            },
            // What belongs to a subscription is read only on the current one: `tally`
            // reads it from that subscription's connection (seed 2924: the primary took a
            // `Subscribe` delayed from before this node served an epoch of its own and
            // shipped records that did not follow this node's log).
            Role::Standby(standby) if stream != 0 && stream != standby.stream => {}
            Role::Standby(standby) => match message {
                // Records outside a subscription answer a question (an epoch asked while
                // this node had none): never a heartbeat of the primary it follows.
                Message::Records { .. } if stream == 0 => {}
                Message::Records { epoch, records } => records_for_standby = Some((epoch, records)),
                // The primary refuses this log as diverged from its own: keep the common
                // prefix and follow again, as `tally`'s running standby does
                // (`Promoter::reopen_standby`). Only on the subscription's own stream.
                Message::Diverged { .. } if stream != 0 => {
                    if standby.primary == Some(from) {
                        ctx.rejoin.push((id, from));
                    }
                }
                Message::Checkpoint { epoch, sequence, state_hash } => {
                    if epoch != standby.follower.epoch() || standby.primary != Some(from) {
                        return;
                    }
                    let applied = up.ledger.sequence();
                    let own = up.ledger.state_hash();
                    if let Err(error) = standby.checkpoints.on_checkpoint(sequence, state_hash, applied, own) {
                        follow_failed(ctx, id, error);
                    }
                }
                _ => {}
            },
        }
        if let Some((epoch, records)) = records_for_standby {
            self.on_records(from, epoch, records, ctx);
        }
    }

    fn on_records(&mut self, from: usize, epoch: u32, records: Vec<Record>, ctx: &mut Ctx) {
        let id = self.id;
        let me = Addr::Node(id);
        let heartbeat = records.is_empty();
        let Some(up) = self.up.as_mut() else { return };
        let Role::Standby(standby) = &mut up.role else { return };
        if standby.primary != Some(from) {
            // Not the connection this standby follows (a stale or unasked sender): only
            // tell an older epoch about the newer one.
            if epoch < standby.follower.epoch() {
                let newer = Message::NewerEpoch { epoch: standby.follower.epoch() };
                ctx.send(me, Addr::Node(from), Payload::peer(&newer));
            }
            return;
        }
        // Records this node already holds (a duplicate or a resend) are skipped; one that
        // differs from what is held here is stale, from an older subscription.
        let held_last = up.log.len() as u64;
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            if record.sequence <= held_last {
                if chain_at(&up.log, record.sequence) != Some(record.chain) {
                    return;
                }
                continue;
            }
            fresh.push(record);
        }
        let steps = match standby.follower.on_records(epoch, &fresh) {
            Ok(steps) => steps,
            Err(FollowError::Gap { .. } | FollowError::EpochOrder { .. }) => {
                // Records lost or reordered on the way: subscribe again at once.
                standby.last_heard = 0;
                return;
            }
            Err(error) => {
                follow_failed(ctx, id, error);
                return;
            }
        };
        for step in steps {
            match step {
                Step::Answer(answer) => {
                    ctx.send(me, Addr::Node(from), Payload::peer(&answer));
                    return;
                }
                Step::PersistEpoch(new) => self.epoch = self.epoch.max(new),
            }
        }
        standby.confirmed = true;
        self.heard_primary_at = ctx.now;
        // A heartbeat comes only once the primary has shipped this stream everything it
        // holds: a rebuilt node now holds every input acknowledged so far, once it is
        // durable here (`tally`'s standby flushes after every message, so at a heartbeat
        // everything before it is on disk). Seed 6389: cleared with its records unflushed,
        // a node whose disks had been replaced lost them to a power loss, came back not
        // recovering and was promoted without inputs only the primary still held.
        if heartbeat && self.recovering {
            up.journal.flush();
            self.recovering = false;
        }
        // Only new records count as hearing from the primary, not heartbeats: on TCP a
        // subscription is one connection, but here a delayed `Subscribe` from before a
        // crash (a longer log than the journal kept) can reach the primary after the new
        // one and make it ship from past this log's end; heartbeats would then keep the
        // standby waiting forever. An idle standby so subscribes again now and then.
        if !fresh.is_empty() {
            standby.last_heard = ctx.now;
        }
        for record in fresh {
            let held = Held {
                epoch: record.epoch,
                timestamp: record.timestamp,
                operation: record.operation,
                chain: [0; 16],
                payload: record.payload,
            };
            if let Err(error) = append_to(&mut up.journal, &mut up.ledger, &mut up.log, &mut up.derived, held) {
                ctx.anomaly(format!("n{id}: record {} from n{from}: {error}", record.sequence));
                return;
            }
            let chain = up.journal.last_chain();
            if let Err(error) = standby.follower.appended(record.sequence, record.epoch, chain) {
                follow_failed(ctx, id, error);
                return;
            }
            if let Err(error) = standby.checkpoints.applied(record.sequence, up.ledger.state_hash()) {
                follow_failed(ctx, id, error);
                return;
            }
        }
    }

    /// Keeps the prefix this node shares with `source`'s log (the simulator finds it by
    /// comparing chains where `tally` probes the primary), and follows again.
    pub fn rejoin(&mut self, source: &[Held], ctx: &mut Ctx) -> Result<(), String> {
        let Some(up) = self.up.as_ref() else { return Ok(()) };
        let common = up.log.iter().zip(source).take_while(|(mine, theirs)| mine.chain == theirs.chain).count() as u64;
        if common == up.last_sequence() {
            return Ok(());
        }
        self.truncate_to(common, ctx)
    }
}

/// Ends the process of a node that lost its power (or aborted): its disks are off, so its
/// destructors write nothing that lasts, and one that panics changes nothing (redb closing
/// a history store that rotted; seed 2 933 of the planted `trust-damaged-history`, 1 500
/// steps, panicked so in `crash`, outside any guard, and ended the whole batch).
fn died(up: Option<Up>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(up)));
}

/// A standby's follower refused: a state hash that differs from the primary's at a
/// sequence whose records this standby verified by chain is a determinism bug, whatever
/// promotions were forced before (a violation); a record that does not chain is an
/// anomaly, excused once a promotion was forced short of the rule.
fn follow_failed(ctx: &mut Ctx, id: usize, error: FollowError) {
    match error {
        FollowError::StateDiverged { .. } => ctx.violation(Kind::StateDiverged, format!("n{id}: {error}")),
        _ => ctx.anomaly(format!("n{id}: {error}")),
    }
}

/// `n3` → 3.
pub fn node_of(name: &str) -> Option<usize> {
    name.strip_prefix('n')?.parse().ok()
}
