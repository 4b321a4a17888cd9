//! The LMAX pipeline around the ledger.
//!
//! ```text
//! Submitter ─(lock)─▶ sequencer ─▶ input ring ─▶ journal stage ─▶ business logic
//!                               timestamps                 append; flush      Ledger::apply
//!                                                          per ring batch          │
//!                                                                                   ▼
//!                                                 output ring ─▶ reply stage, outcome-log stage
//! ```
//!
//! - The sequencer is the input ring's only producer, behind a lock that submitters take
//!   on their own threads, so timestamps are assigned once, in ring order, before the
//!   journal sees the input; a ticker thread takes the same lock to inject ticks.
//! - The journal stage appends each mutation and writes its journal sequence into the slot;
//!   at the end of every ring batch it commits (flushes under `local`). Batches are
//!   whatever is waiting, so the flush is amortised exactly as far as the load allows.
//! - The business-logic thread applies a slot only once the watermark its durability
//!   policy requires has passed the slot's sequence (see `gate`): explicit code, not a
//!   consequence of when the ring publishes cursors. Under `replicated:k` that watermark
//!   moves when standbys acknowledge, on threads the pipeline does not know.
//! - The engine does no I/O itself: the journal stage and the outcome log are trait objects
//!   the server supplies ([`InputLog`], [`OutcomeLog`]).

mod checkpoint;
mod clock;
mod command;
mod committed;
mod doorbell;
mod feed;
mod gate;
mod histogram;
mod latency;
mod sequencer;
mod stages;
mod wait;

use sequencer::Sequencer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};
use tally_codecs::wire::{Reply, Request};

use crate::Ledger;

pub use checkpoint::{CheckpointRequests, CheckpointTaker, StateCopy, checkpoint_channel};
pub use clock::{SystemClock, Timestamps, WallClock, tick_due};
pub use command::{Command, apply};
pub use committed::{Committed, apply_collecting};
pub use feed::stop_the_process_on_panic;
pub use gate::{Durability, REPLICAS_MAX, Watermarks};
pub use histogram::AtomicHistogram;
pub use latency::{Stage, StageLatencies, now_ns};
pub use sequencer::LAZY_FLUSH_INTERVAL;
pub use stages::wait_for_history;
pub use wait::Wait;

/// Input ring slots by default; a slot may hold a full request (≤ 1 MiB).
pub const RING_SLOTS_DEFAULT: usize = 256;

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Input and output ring sizes; rounded up to a power of two.
    pub ring_slots: usize,
    pub durability: Durability,
    pub wait: Wait,
    /// How often the sequencer checks whether a pending transfer's deadline has passed;
    /// only then does it inject a `tick` (a journaled input) to expire it.
    pub tick_interval: Duration,
    /// Where the business-logic thread hands a copy of the state when a checkpoint is
    /// asked for; `None`: checkpoints are off.
    pub checkpoints: Option<CheckpointTaker>,
    /// The clock the sequencer stamps inputs from (the system's unless a test or the
    /// simulator gives its own).
    pub clock: Arc<dyn WallClock>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ring_slots: RING_SLOTS_DEFAULT,
            durability: Durability::Local,
            wait: Wait::Parking,
            tick_interval: Duration::from_secs(1),
            checkpoints: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// The journal stage, supplied by the server. Called on the journal thread, in sequence
/// order, for mutations only.
pub trait InputLog: Send + 'static {
    /// Appends a mutation and returns its journal sequence (gapless, increasing).
    fn append(&mut self, timestamp: u64, command: &Command) -> u64;
    /// End of a ring batch: start making everything appended durable as the policy asks
    /// (it may finish later, on another thread; the watermarks say when). A failure must
    /// abort the process, never return.
    fn commit(&mut self, durability: Durability);
    /// The watermarks the gate reads; `appended` holds the last sequence recovered.
    fn watermarks(&self) -> Watermarks;
}

/// Where a reply goes. Every request the pipeline took (its submission returned `Ok`) gets
/// exactly one of the two calls; a refused submission gets neither (its caller was told).
pub trait ReplyTo: Send + Sync + 'static {
    /// The request's reply; called on the reply-stage thread.
    fn reply(&self, request_id: u64, reply: &Reply);
    /// The pipeline stopped with the request unapplied and will never answer it: its
    /// watermark had not passed within [`STOP_GRACE`] (a fenced node's gate never passes),
    /// or its history wait gave up. A mutation stays in the journal, for a follower to
    /// truncate or a restart (or a standby that holds it) to apply, so whether it takes
    /// effect is unknown here; whatever waits for its reply must be freed and told so.
    /// Called on the thread that gave up on it (the business logic's, or the reply
    /// stage's). The default does nothing: for targets that hold nothing per request
    /// (dropping the target is then enough, as for [`Submitter::execute`], whose caller
    /// sees `Stopped`).
    fn abandoned(&self, _request_id: u64) {}
}

/// A request the business logic has taken from the input ring, and the claim to its one
/// answer: [`Owed::answer`] consumes it, and dropping it unanswered, wherever that happens
/// (the gate or the history wait refused it at a stop, a stage panicked), abandons it.
/// So no path can drop a request silently, or answer and abandon the same one.
pub(crate) struct Owed {
    /// `None` once answered or abandoned.
    reply_to: Option<Arc<dyn ReplyTo>>,
    request_id: u64,
}

impl Owed {
    pub(crate) fn new(reply_to: Arc<dyn ReplyTo>, request_id: u64) -> Owed {
        Owed { reply_to: Some(reply_to), request_id }
    }

    pub(crate) fn answer(mut self, reply: &Reply) {
        if let Some(reply_to) = self.reply_to.take() {
            reply_to.reply(self.request_id, reply);
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if let Some(reply_to) = self.reply_to.take() {
            reply_to.abandoned(self.request_id);
        }
    }
}

/// The derived log of outcomes, supplied by the server; called on its own thread
/// (`outcome-writer`, fed from the output ring through a queue bounded in events), after
/// the business logic, so a slow log can only lag, never slow the ledger down until it
/// lags by a whole queue.
pub trait OutcomeLog: Send + 'static {
    /// One applied mutation, in journal order with no sequence missing: a tick has no
    /// reply, every request has one.
    fn record(
        &mut self,
        sequence: u64,
        timestamp: u64,
        command: &Command,
        reply: Option<&Reply>,
        committed: &Committed,
    );
    /// The end of a batch (what was queued at once): make what was recorded durable, now
    /// or (to share one sync among several batches) later, from [`OutcomeLog::idle`] or a
    /// later batch's end.
    fn end_of_batch(&mut self);
    /// Called on the same thread when the writer has found its queue empty, before it
    /// sleeps: do held-back work that is due. Returns how long until what is still held
    /// back falls due (the stage sleeps no longer), `None` when nothing is held back.
    fn idle(&mut self) -> Option<std::time::Duration> {
        None
    }
}

/// The history store's writer, supplied by the server; called on the `history-writer`
/// thread (after the business logic, like the outcome log) with what each mutation
/// committed.
/// After each batch it commits and advances its mark (see [`History::mark`]).
pub trait HistoryWriter: Send + 'static {
    /// Takes one input's effects (moved out of its output slot, so the slot no longer
    /// holds them while it waits to be reused).
    fn record(&mut self, effects: crate::Effects);
    /// Commit what was recorded (the history stage calls it once per group of ring
    /// batches, see `stages::HistoryGroup`) and move the visible mark.
    fn end_of_batch(&mut self);
    /// As [`OutcomeLog::idle`]: held-back work that is due (a durable commit), and how
    /// long until what is still held back falls due.
    fn idle(&mut self) -> Option<std::time::Duration> {
        None
    }
}

/// Hot and cold (docs/design.md §3.9): the store the cold-lookup stage reads ahead of the
/// business logic and the writer the history stage feeds after it. The hot window is the
/// ledger's ([`crate::Ledger::set_hot_window`]).
pub struct History {
    pub lookup: Arc<dyn crate::HistoryLookup + Send + Sync>,
    pub writer: Box<dyn HistoryWriter>,
    /// Every record of a sequence at or below this is findable through `lookup`.
    pub mark: Arc<AtomicU64>,
}

/// Counters the business-logic thread publishes after each ring batch.
#[derive(Default)]
pub struct PipelineStats {
    applied_inputs: AtomicU64,
    applied_events: AtomicU64,
    last_timestamp: AtomicU64,
    /// The earliest pending deadline; `u64::MAX` when nothing can expire.
    next_expiry: AtomicU64,
    /// The last applied sequence and the state hash after it, read together.
    applied: Mutex<(u64, u128)>,
    checkpoint: CheckpointCounters,
    /// Inputs whose cold look-up had to be redone on the business-logic thread because the
    /// history store was more than the hot window behind (docs/design.md §3.9).
    pub cold_lookups_on_business_logic: AtomicU64,
    /// Where requests spend their time, stage by stage (see [`StageLatencies`]).
    stage_latencies: StageLatencies,
    rings: RingCounters,
}

/// Slots put into and taken out of the two rings, for their occupancy. Each counter has
/// one writer, which stores its running total (no read-modify-write), once per slot on
/// the sequencer and once per ring batch everywhere else.
#[derive(Default)]
struct RingCounters {
    /// Slots per ring (both have the same size); 0 until the rings are built.
    slots: AtomicU64,
    /// Published by the sequencer, taken by the business logic (its ring's last stage).
    input_published: AtomicU64,
    input_taken: AtomicU64,
    /// Published by the business logic, taken by each of its consumers (reply,
    /// outcome-log, history stage).
    output_published: AtomicU64,
    output_taken: [AtomicU64; OUTPUT_CONSUMERS],
}

/// The output ring's consumers: the reply, outcome-log and history stages.
pub(crate) const OUTPUT_CONSUMERS: usize = 3;

/// How full the rings are, in slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingOccupancy {
    /// Slots in each ring (0: the pipeline has not started).
    pub slots: u64,
    /// Published by the sequencer and not yet taken by the business logic.
    pub input: u64,
    /// Published by the business logic and not yet taken by its slowest consumer.
    pub output: u64,
}

/// What checkpoints cost and how they fare, for status and metrics.
#[derive(Default)]
struct CheckpointCounters {
    /// Copies the business-logic thread made.
    copies: AtomicU64,
    /// The longest and the last pause a copy cost the business-logic thread.
    stall_ns_max: AtomicU64,
    stall_ns_last: AtomicU64,
    /// Checkpoints that became the recovery point, and the newest one's sequence.
    committed: AtomicU64,
    committed_sequence: AtomicU64,
    /// Checkpoints that failed (write error, verification mismatch); each is logged.
    failed: AtomicU64,
}

impl PipelineStats {
    /// The journal sequence of the last mutation applied.
    pub fn applied_sequence(&self) -> u64 {
        self.applied_state().0
    }

    /// The last applied sequence and the state hash right after it: a checkpoint.
    pub fn applied_state(&self) -> (u64, u128) {
        *self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn applied_inputs(&self) -> u64 {
        self.applied_inputs.load(Ordering::Acquire)
    }

    pub fn applied_events(&self) -> u64 {
        self.applied_events.load(Ordering::Acquire)
    }

    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp.load(Ordering::Acquire)
    }

    /// The earliest deadline of a pending transfer as of the last batch, or `None`.
    pub fn next_expiry(&self) -> Option<u64> {
        Some(self.next_expiry.load(Ordering::Acquire)).filter(|&deadline| deadline != u64::MAX)
    }

    /// Where requests spend their time in the pipeline, stage by stage.
    /// Slots published into the input ring so far, ticks included.
    pub fn inputs_published(&self) -> u64 {
        self.rings.input_published.load(Ordering::Acquire)
    }

    pub fn stage_latencies(&self) -> &StageLatencies {
        &self.stage_latencies
    }

    pub fn state_hash(&self) -> u128 {
        self.applied_state().1
    }

    /// How full the input and output rings are now.
    pub fn ring_occupancy(&self) -> RingOccupancy {
        let rings = &self.rings;
        // Taken before published: a slot taken between the two loads is counted as in
        // the ring, never as taken before it was put in.
        let input_taken = rings.input_taken.load(Ordering::Acquire);
        let output_taken =
            rings.output_taken.iter().map(|taken| taken.load(Ordering::Acquire)).min().unwrap_or_default();
        RingOccupancy {
            slots: rings.slots.load(Ordering::Acquire),
            input: rings.input_published.load(Ordering::Acquire).saturating_sub(input_taken),
            output: rings.output_published.load(Ordering::Acquire).saturating_sub(output_taken),
        }
    }

    pub(crate) fn set_ring_slots(&self, slots: u64) {
        self.rings.slots.store(slots, Ordering::Release);
    }

    /// The sequencer's running total of slots it published.
    pub(crate) fn input_published(&self, total: u64) {
        self.rings.input_published.store(total, Ordering::Release);
    }

    /// The business logic's running totals of input slots taken and output slots published.
    pub(crate) fn business_logic_moved(&self, input_taken: u64, output_published: u64) {
        self.rings.input_taken.store(input_taken, Ordering::Release);
        self.rings.output_published.store(output_published, Ordering::Release);
    }

    /// Output consumer `consumer`'s running total of slots taken.
    pub(crate) fn output_taken(&self, consumer: usize, total: u64) {
        self.rings.output_taken[consumer].store(total, Ordering::Release);
    }

    /// Called by the business-logic thread after copying the state for a checkpoint.
    pub fn record_checkpoint_stall(&self, stall: Duration) {
        let nanoseconds = u64::try_from(stall.as_nanos()).unwrap_or(u64::MAX);
        self.checkpoint.copies.fetch_add(1, Ordering::AcqRel);
        self.checkpoint.stall_ns_last.store(nanoseconds, Ordering::Release);
        self.checkpoint.stall_ns_max.fetch_max(nanoseconds, Ordering::AcqRel);
    }

    /// Called by the checkpoint writer when the checkpoint at `sequence` became the
    /// recovery point.
    pub fn record_checkpoint_committed(&self, sequence: u64) {
        self.checkpoint.committed.fetch_add(1, Ordering::AcqRel);
        self.checkpoint.committed_sequence.fetch_max(sequence, Ordering::AcqRel);
    }

    /// Called by the checkpoint writer for each checkpoint that failed.
    pub fn record_checkpoint_failed(&self) {
        self.checkpoint.failed.fetch_add(1, Ordering::AcqRel);
    }

    /// Copies made for checkpoints, and the longest and last stall (ns) each cost the
    /// business-logic thread.
    pub fn checkpoint_stalls(&self) -> (u64, u64, u64) {
        let counters = &self.checkpoint;
        (
            counters.copies.load(Ordering::Acquire),
            counters.stall_ns_max.load(Ordering::Acquire),
            counters.stall_ns_last.load(Ordering::Acquire),
        )
    }

    /// Checkpoints committed, the newest committed one's sequence (0: none) and
    /// checkpoints failed since start.
    pub fn checkpoints(&self) -> (u64, u64, u64) {
        let counters = &self.checkpoint;
        (
            counters.committed.load(Ordering::Acquire),
            counters.committed_sequence.load(Ordering::Acquire),
            counters.failed.load(Ordering::Acquire),
        )
    }

    /// Publishes the state after a batch: `ledger` holds every input up to `sequence`.
    /// Called by the business-logic thread (a primary's, or a standby's).
    pub fn publish(&self, sequence: u64, inputs: u64, events: u64, ledger: &Ledger) {
        self.applied_inputs.fetch_add(inputs, Ordering::AcqRel);
        self.applied_events.fetch_add(events, Ordering::AcqRel);
        self.last_timestamp.store(ledger.last_timestamp(), Ordering::Release);
        self.next_expiry.store(ledger.next_expiry().unwrap_or(u64::MAX), Ordering::Release);
        let mut applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if sequence >= applied.0 {
            *applied = (sequence, ledger.state_hash());
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the node is busy: its input ring is full")]
    Busy,
    #[error("the pipeline has stopped")]
    Stopped,
}

pub(crate) struct Submission {
    pub request: Request,
    pub request_id: u64,
    pub reply_to: Arc<dyn ReplyTo>,
    /// When it was submitted, on the stage clock ([`now_ns`]).
    pub submitted_ns: u64,
}

/// A handle for submitting requests; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Submitter {
    sequencer: Arc<Sequencer>,
    stats: Arc<PipelineStats>,
}

impl Submitter {
    /// Stamps the request and publishes it into the input ring on the calling thread;
    /// blocks while the ring is full, which is the back-pressure that makes a gateway stop
    /// reading from its sockets.
    pub fn submit(&self, request: Request, request_id: u64, reply_to: Arc<dyn ReplyTo>) -> Result<(), SubmitError> {
        self.sequencer.submit(Submission { request, request_id, reply_to, submitted_ns: now_ns() })
    }

    /// As [`Submitter::submit`], or answers `Busy` at once when the input ring is full.
    pub fn try_submit(&self, request: Request, request_id: u64, reply_to: Arc<dyn ReplyTo>) -> Result<(), SubmitError> {
        self.sequencer.try_submit(Submission { request, request_id, reply_to, submitted_ns: now_ns() })
    }

    /// Journals a tick now (it expires whatever is due by its timestamp, often nothing);
    /// blocks while the ring is full. A primary promoted with records of an older epoch
    /// needs one input of its own epoch held by a standby before those count as committed
    /// (docs/design.md §7a); on an idle node this is that input.
    pub fn tick(&self) -> Result<(), SubmitError> {
        self.sequencer.tick_now()
    }

    /// The pipeline's counters and stage latencies; the gateway records the write stage.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Submits and waits for the reply: the in-process embedding API.
    pub fn execute(&self, request: Request) -> Result<Reply, SubmitError> {
        let (sender, receiver) = channel::bounded(1);
        self.submit(request, 0, Arc::new(ReplySlot(sender)))?;
        receiver.recv().map_err(|_| SubmitError::Stopped)
    }
}

/// Hands one reply back to a thread waiting in [`Submitter::execute`].
struct ReplySlot(Sender<Reply>);

impl ReplyTo for ReplySlot {
    fn reply(&self, _request_id: u64, reply: &Reply) {
        // The caller may have given up waiting; then nobody wants the reply.
        let _ = self.0.try_send(reply.clone());
    }
}

/// A running pipeline: its threads, and the way to stop them.
pub struct Pipeline {
    submitter: Submitter,
    stats: Arc<PipelineStats>,
    /// The ticker thread, and how to tell it to close the sequencer and drain the stages.
    ticker: Option<(JoinHandle<()>, Sender<()>)>,
    ledger_back: Receiver<Ledger>,
    /// Releases the durability gate at shutdown, after [`STOP_GRACE`].
    stopping: Arc<AtomicBool>,
}

/// At shutdown, how long inputs may still wait for their watermark (a standby's
/// acknowledgement) before the gate gives up on them: they are then not applied but
/// abandoned ([`ReplyTo::abandoned`]), and stay in the journal for a follower to truncate
/// or a restart to replay.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

impl Pipeline {
    /// Starts the sequencer, the stages and the business-logic thread over `ledger`, which
    /// must already hold the recovered state (snapshot plus journal replay).
    pub fn start(
        config: PipelineConfig,
        ledger: Ledger,
        input_log: Box<dyn InputLog>,
        outcome_log: Box<dyn OutcomeLog>,
    ) -> Pipeline {
        Pipeline::start_with_history(config, ledger, input_log, outcome_log, None)
    }

    /// [`Pipeline::start`] with a history store: a cold-lookup stage before the business
    /// logic and a history stage after it. `ledger` must already use `history.hot_window`.
    pub fn start_with_history(
        config: PipelineConfig,
        ledger: Ledger,
        input_log: Box<dyn InputLog>,
        outcome_log: Box<dyn OutcomeLog>,
        history: Option<History>,
    ) -> Pipeline {
        // Without a history store nothing holds what leaves the hot window: a retry of an
        // evicted id would be applied again.
        let window = ledger.hot_window();
        assert!(
            history.is_some() || (window.inputs() == u64::MAX && window.events() == u64::MAX),
            "a pipeline without a history store needs a ledger that keeps everything hot (HotWindow::everything)"
        );
        let stats = Arc::new(PipelineStats::default());
        let recovered = input_log.watermarks().appended.load(Ordering::Acquire);
        stats.publish(recovered, 0, 0, &ledger);
        let (ledger_sender, ledger_back) = channel::bounded(1);
        let resume_after = ledger.last_timestamp();
        let stopping = Arc::new(AtomicBool::new(false));
        let unflushed = (!config.durability.flushes_locally()).then(|| {
            let watermarks = input_log.watermarks();
            (watermarks.appended, watermarks.flushed)
        });
        let gate = gate::Gate {
            durability: config.durability,
            watermarks: input_log.watermarks(),
            stopping: stopping.clone(),
        };
        let stages = stages::Stages {
            config: config.clone(),
            ledger,
            input_log,
            outcome_log,
            stats: stats.clone(),
            gate,
            history,
            stopping: stopping.clone(),
        };
        let producer = stages.build(ledger_sender);
        let sequencer = Arc::new(Sequencer::new(producer, resume_after, config.clock.clone(), stats.clone()));
        let (stop, stop_receiver) = channel::bounded(1);
        let ticker = sequencer::spawn_ticker(sequencer.clone(), stop_receiver, config.tick_interval, unflushed);
        let submitter = Submitter { sequencer, stats: stats.clone() };
        Pipeline { submitter, stats, ticker: Some((ticker, stop)), ledger_back, stopping }
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    pub fn stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    /// Applies everything already submitted (inputs whose watermark does not pass within
    /// [`STOP_GRACE`] excepted: those are abandoned), stops every thread and returns the
    /// ledger.
    pub fn shutdown(mut self) -> Ledger {
        self.stop();
        self.ledger_back.recv().expect("invariant: the business-logic thread hands the ledger back when it stops")
    }

    fn stop(&mut self) {
        if let Some((ticker, stop)) = self.ticker.take() {
            // The ticker may already be gone if a stage panicked; then there is nothing to stop.
            // Everything submitted is in the ring already: the ticker closes the sequencer
            // behind it and waits for the stages to drain.
            let _ = stop.send(());
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while !ticker.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.stopping.store(true, Ordering::Release);
            if ticker.join().is_err() {
                eprintln!("tally: the sequencer's ticker thread panicked");
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
