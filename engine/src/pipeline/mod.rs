//! The LMAX pipeline around the ledger.
//!
//! ```text
//! Submitter ─(bounded queue)─▶ sequencer ─▶ input ring ─▶ journal stage ─▶ business logic
//!                               timestamps                 append; flush      Ledger::apply
//!                                                          per ring batch          │
//!                                                                                   ▼
//!                                                 output ring ─▶ reply stage, outcome-log stage
//! ```
//!
//! - One sequencer thread is the input ring's only producer, so timestamps are assigned
//!   once, in ring order, before the journal sees the input.
//! - The business-logic thread sees an input only after the journal stage has finished the
//!   whole ring batch it arrived in, and the journal stage commits (flushes) at the end of
//!   every batch: an input is applied only once it is durable under the policy. Batches are
//!   whatever is waiting, so the flush is amortised exactly as far as the load allows.
//! - The engine does no I/O itself: the journal stage and the outcome log are trait objects
//!   the server supplies ([`InputLog`], [`OutcomeLog`]).

mod command;
mod doorbell;
mod sequencer;
mod stages;
mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use tally_codecs::wire::{Reply, Request};

use crate::Ledger;

pub use command::{Command, apply};
pub use wait::Wait;

/// Input ring slots by default; a slot may hold a full request (≤ 1 MiB).
pub const RING_SLOTS_DEFAULT: usize = 256;
/// Requests that may wait for the sequencer before submitters block.
pub const SUBMISSION_QUEUE_DEFAULT: usize = 64;

/// When a reply may be sent, relative to the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Once written to the page cache: fast, lost on a machine crash.
    None,
    /// Once flushed to the local disk.
    Local,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Durability, String> {
        match text {
            "none" => Ok(Durability::None),
            "local" => Ok(Durability::Local),
            other => Err(format!("unknown durability {other:?}: expected none or local")),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::None => "none",
            Durability::Local => "local",
        })
    }
}

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Input and output ring sizes; rounded up to a power of two.
    pub ring_slots: usize,
    pub submission_queue: usize,
    pub durability: Durability,
    pub wait: Wait,
    /// How often the sequencer checks whether a pending transfer's deadline has passed;
    /// only then does it inject a `tick` (a journaled input) to expire it.
    pub tick_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            ring_slots: RING_SLOTS_DEFAULT,
            submission_queue: SUBMISSION_QUEUE_DEFAULT,
            durability: Durability::Local,
            wait: Wait::Parking,
            tick_interval: Duration::from_secs(1),
        }
    }
}

/// The journal stage, supplied by the server. Called on the journal thread, in sequence
/// order, for mutations only.
pub trait InputLog: Send + 'static {
    fn append(&mut self, timestamp: u64, command: &Command);
    /// End of a ring batch: under `Local`, make everything appended durable. A failure
    /// must abort the process, never return.
    fn commit(&mut self, durability: Durability);
}

/// Where a reply goes; called on the reply-stage thread.
pub trait ReplyTo: Send + Sync + 'static {
    fn reply(&self, request_id: u64, reply: &Reply);
}

/// The derived log of outcomes, supplied by the server; called on its own thread, after
/// the business logic, so a slow log can only lag, never slow the ledger down.
pub trait OutcomeLog: Send + 'static {
    fn record(&mut self, timestamp: u64, command: &Command, reply: &Reply);
    fn end_of_batch(&mut self);
}

/// Counters the business-logic thread publishes after each ring batch.
#[derive(Default)]
pub struct PipelineStats {
    applied_inputs: AtomicU64,
    applied_events: AtomicU64,
    last_timestamp: AtomicU64,
    /// The earliest pending deadline; `u64::MAX` when nothing can expire.
    next_expiry: AtomicU64,
    state_hash: Mutex<u128>,
}

impl PipelineStats {
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

    pub fn state_hash(&self) -> u128 {
        *self.state_hash.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, inputs: u64, events: u64, ledger: &Ledger) {
        self.applied_inputs.fetch_add(inputs, Ordering::AcqRel);
        self.applied_events.fetch_add(events, Ordering::AcqRel);
        self.last_timestamp.store(ledger.last_timestamp(), Ordering::Release);
        self.next_expiry.store(ledger.next_expiry().unwrap_or(u64::MAX), Ordering::Release);
        *self.state_hash.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ledger.state_hash();
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the node is busy: its submission queue is full")]
    Busy,
    #[error("the pipeline has stopped")]
    Stopped,
}

pub(crate) struct Submission {
    pub request: Request,
    pub request_id: u64,
    pub reply_to: Arc<dyn ReplyTo>,
}

pub(crate) enum Message {
    Submit(Submission),
    Stop,
}

/// A handle for submitting requests; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Submitter {
    sender: Sender<Message>,
}

impl Submitter {
    /// Queues a request; blocks while the queue is full, which is the back-pressure that
    /// makes a gateway stop reading from its sockets.
    pub fn submit(&self, request: Request, request_id: u64, reply_to: Arc<dyn ReplyTo>) -> Result<(), SubmitError> {
        let message = Message::Submit(Submission { request, request_id, reply_to });
        self.sender.send(message).map_err(|_| SubmitError::Stopped)
    }

    /// Queues a request, or answers `Busy` at once when the queue is full.
    pub fn try_submit(&self, request: Request, request_id: u64, reply_to: Arc<dyn ReplyTo>) -> Result<(), SubmitError> {
        let message = Message::Submit(Submission { request, request_id, reply_to });
        self.sender.try_send(message).map_err(|error| match error {
            TrySendError::Full(_) => SubmitError::Busy,
            TrySendError::Disconnected(_) => SubmitError::Stopped,
        })
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
    sequencer: Option<JoinHandle<()>>,
    ledger_back: Receiver<Ledger>,
}

impl Pipeline {
    /// Starts the sequencer, the stages and the business-logic thread over `ledger`, which
    /// must already hold the recovered state (snapshot plus journal replay).
    pub fn start(
        config: PipelineConfig,
        ledger: Ledger,
        input_log: Box<dyn InputLog>,
        outcome_log: Box<dyn OutcomeLog>,
    ) -> Pipeline {
        let (sender, receiver) = channel::bounded(config.submission_queue.max(1));
        let stats = Arc::new(PipelineStats::default());
        stats.publish(0, 0, &ledger);
        let (ledger_sender, ledger_back) = channel::bounded(1);
        let resume_after = ledger.last_timestamp();
        let stages = stages::Stages { config: config.clone(), ledger, input_log, outcome_log, stats: stats.clone() };
        let producer = stages.build(ledger_sender);
        let sequencer = sequencer::spawn(producer, receiver, config.tick_interval, resume_after, stats.clone());
        Pipeline { submitter: Submitter { sender }, stats, sequencer: Some(sequencer), ledger_back }
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    pub fn stats(&self) -> Arc<PipelineStats> {
        self.stats.clone()
    }

    /// Applies everything already submitted, stops every thread and returns the ledger.
    pub fn shutdown(mut self) -> Ledger {
        self.stop();
        self.ledger_back.recv().expect("invariant: the business-logic thread hands the ledger back when it stops")
    }

    fn stop(&mut self) {
        if let Some(sequencer) = self.sequencer.take() {
            // The sequencer may already be gone if a stage panicked; then there is nothing to stop.
            let _ = self.submitter.sender.send(Message::Stop);
            if sequencer.join().is_err() {
                eprintln!("tally: the sequencer thread panicked");
            }
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}
