//! The sequencer: the input ring's single producer, behind a lock. A submitter takes the
//! lock, stamps its request with the next timestamp and publishes it into the ring on its
//! own thread; a ticker thread takes the same lock to inject a tick when a pending
//! transfer is due. Before, a sequencer thread took submissions from a queue and published
//! them: one more thread wake-up (two futex calls and a context switch) per request,
//! ≈ 14 µs of CPU per single-transfer request at 5 000 requests/s on the 2-core VM
//! (perf-reports/2026-12-03-request-cpu.md). The lock keeps what the thread gave: one
//! producer at a time, so timestamps increase in ring order.

use crossbeam::channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::clock::{Timestamps, WallClock, tick_due};
use super::doorbell::INPUT_PUBLISHED;
use super::latency::{Stage, now_ns};
use super::stages::{InputProducer, InputSlot, publish};
use super::{Command, PipelineStats, Submission, SubmitError};

/// The input ring's producer and the clock that stamps what goes into it; `producer` is
/// `None` once the pipeline stops (its drop drains and joins the stages).
struct Entry {
    producer: Option<InputProducer>,
    timestamps: Timestamps,
    /// Slots published, ticks included (for the input ring's occupancy).
    published: u64,
}

/// Under policies that do not flush at every batch (`none`, `replicated:k`), the longest
/// the journal stage goes without a flush while inputs keep coming (the server's
/// `input_log` flushes at the first batch end after it), and how long the ticker lets the
/// journal lag its appends before it nudges.
pub const LAZY_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How often the ticker looks at the journal's lag at least (see `spawn_ticker`).
const LAG_CHECK: Duration = Duration::from_millis(250);

/// The shared sequencer: every submitter and the ticker publish through it.
pub(crate) struct Sequencer {
    entry: Mutex<Entry>,
    clock: Arc<dyn WallClock>,
    stats: Arc<PipelineStats>,
}

impl Sequencer {
    /// Timestamps continue after `resume_after`, the recovered ledger's last one, even if
    /// the wall clock has stepped back since.
    pub(crate) fn new(
        producer: InputProducer,
        resume_after: u64,
        clock: Arc<dyn WallClock>,
        stats: Arc<PipelineStats>,
    ) -> Sequencer {
        let entry = Entry { producer: Some(producer), timestamps: Timestamps::after(resume_after), published: 0 };
        Sequencer { entry: Mutex::new(entry), clock, stats }
    }

    fn entry(&self) -> MutexGuard<'_, Entry> {
        self.entry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stamps and publishes a request; blocks while the ring is full.
    pub(crate) fn submit(&self, submission: Submission) -> Result<(), SubmitError> {
        let mut entry = self.entry();
        let Entry { producer, timestamps, published } = &mut *entry;
        let producer = producer.as_mut().ok_or(SubmitError::Stopped)?;
        let timestamp = timestamps.next(self.clock.now_ns());
        let published_ns = now_ns();
        self.stats.stage_latencies().record_between(Stage::Submission, submission.submitted_ns, published_ns);
        publish(producer, &INPUT_PUBLISHED, |slot: &mut InputSlot| fill(slot, timestamp, published_ns, submission));
        *published += 1;
        self.stats.input_published(*published);
        Ok(())
    }

    /// As [`Sequencer::submit`], but answers `Busy` instead of waiting for a full ring.
    pub(crate) fn try_submit(&self, submission: Submission) -> Result<(), SubmitError> {
        let mut entry = self.entry();
        let Entry { producer, timestamps, published } = &mut *entry;
        let producer = producer.as_mut().ok_or(SubmitError::Stopped)?;
        let mut submission = Some(submission);
        let mut stamped = None;
        let result = disruptor::Producer::try_publish(producer, |slot: &mut InputSlot| {
            if let Some(submission) = submission.take() {
                // Stamped only once the slot is there, so a refused request spends no timestamp.
                let timestamp = timestamps.next(self.clock.now_ns());
                let published_ns = now_ns();
                stamped = Some((submission.submitted_ns, published_ns));
                fill(slot, timestamp, published_ns, submission);
            }
        });
        if result.is_err() {
            return Err(SubmitError::Busy);
        }
        INPUT_PUBLISHED.ring();
        if let Some((submitted_ns, published_ns)) = stamped {
            self.stats.stage_latencies().record_between(Stage::Submission, submitted_ns, published_ns);
        }
        *published += 1;
        self.stats.input_published(*published);
        Ok(())
    }

    /// Injects a tick when the earliest pending deadline the business logic published has
    /// passed and is later than the last tick; returns the tick's timestamp.
    fn tick_if_due(&self, last_tick: u64) -> Option<u64> {
        let due =
            |timestamps: &Timestamps, wall_ns| tick_due(self.stats.next_expiry(), last_tick, timestamps.peek(wall_ns));
        self.publish_unanswered(due, Command::Tick)
    }

    /// Injects a tick now, due or not (it expires whatever is due by its timestamp, often
    /// nothing): a journaled input of this primary's own, which a promoted primary needs
    /// before what it inherited counts as committed (see `Submitter::tick`).
    pub(crate) fn tick_now(&self) -> Result<(), SubmitError> {
        self.publish_unanswered(|_, _| true, Command::Tick).map(|_| ()).ok_or(SubmitError::Stopped)
    }

    /// Publishes an empty query that nobody reads: it journals nothing, but it ends a ring
    /// batch in the journal stage, whose commit then flushes if its policy's interval has
    /// passed. What an idle node appended is made durable that way (see `spawn_ticker`).
    fn nudge(&self) {
        let query = Command::Request(tally_codecs::wire::Request::LookupAccounts(Vec::new()));
        self.publish_unanswered(|_, _| true, query);
    }

    /// Publishes `command`, which no one waits for an answer to, if `wanted` says so under
    /// the sequencer's lock; its timestamp (`None`: not wanted, or the sequencer closed).
    fn publish_unanswered(&self, wanted: impl FnOnce(&Timestamps, u64) -> bool, command: Command) -> Option<u64> {
        let mut entry = self.entry();
        let Entry { producer, timestamps, published } = &mut *entry;
        let producer = producer.as_mut()?;
        let wall_ns = self.clock.now_ns();
        if !wanted(timestamps, wall_ns) {
            return None;
        }
        let timestamp = timestamps.next(wall_ns);
        publish(producer, &INPUT_PUBLISHED, |slot: &mut InputSlot| {
            slot.timestamp = timestamp;
            slot.submitted_ns = 0;
            slot.published_ns = 0;
            slot.request_id = 0;
            *slot.command.get_mut().unwrap_or_else(PoisonError::into_inner) = command;
            *slot.reply_to.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        });
        *published += 1;
        self.stats.input_published(*published);
        Some(timestamp)
    }

    /// Takes the producer out (later submissions are refused) and drops it, which lets
    /// every stage drain what was published and joins them.
    fn close(&self) {
        let producer = self.entry().producer.take();
        drop(producer);
    }
}

fn fill(slot: &mut InputSlot, timestamp: u64, published_ns: u64, submission: Submission) {
    slot.timestamp = timestamp;
    slot.submitted_ns = submission.submitted_ns;
    slot.published_ns = published_ns;
    slot.request_id = submission.request_id;
    *slot.command.get_mut().unwrap_or_else(PoisonError::into_inner) = Command::Request(submission.request);
    *slot.reply_to.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(submission.reply_to);
}

/// Starts the ticker: every `tick_interval` it injects a tick if one is due (an idle
/// ledger with nothing to expire journals nothing; a tick is still an input with its own
/// timestamp and sequence, so expiry stays a function of the journal). When `stop` is
/// signalled or dropped it closes the sequencer (behind everything already published) and
/// ends once the stages have drained.
///
/// `unflushed` (the journal's appended and flushed marks, given where the policy does not
/// flush at every batch: `none`, `replicated:k`): the journal stage flushes there only at
/// a batch end once its interval has passed, so the last inputs before a quiet spell would
/// stay unflushed, and everything that waits for the local durable mark (the outcome
/// stream and so the sinks, checkpoints, segment retention) with them, until the next
/// input. Once the marks have differed for [`LAZY_FLUSH_INTERVAL`] (the journal's last
/// flush is then at least that old, so the nudge's batch end flushes), the ticker nudges the
/// journal stage with one empty query; it looks at least every [`LAG_CHECK`], so the last
/// inputs are flushed within about 1.5 s whatever the tick interval.
pub(crate) fn spawn_ticker(
    sequencer: Arc<Sequencer>,
    stop: Receiver<()>,
    tick_interval: Duration,
    unflushed: Option<(Arc<AtomicU64>, Arc<AtomicU64>)>,
) -> JoinHandle<()> {
    let body = move || {
        let mut behind_since: Option<Instant> = None;
        // The timestamp of the last tick: a deadline at or before it was expired by that
        // tick, even if the business logic has not yet published the next one.
        let mut last_tick = 0u64;
        // Ticks are looked for every `tick_interval`; the journal's lag, where it can lag,
        // at least every `LAG_CHECK`, however long the tick interval.
        let check_every = if unflushed.is_some() { tick_interval.min(LAG_CHECK) } else { tick_interval };
        let (mut last_check, mut last_tick_check) = (Instant::now(), Instant::now());
        loop {
            let until_check = check_every.saturating_sub(last_check.elapsed());
            match stop.recv_timeout(until_check) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            last_check = Instant::now();
            if last_check.saturating_duration_since(last_tick_check) >= tick_interval {
                last_tick_check = last_check;
                if let Some(timestamp) = sequencer.tick_if_due(last_tick) {
                    last_tick = timestamp;
                }
            }
            if let Some((appended, flushed)) = &unflushed {
                let behind = flushed.load(Ordering::Acquire) < appended.load(Ordering::Acquire);
                match behind_since {
                    _ if !behind => behind_since = None,
                    None => behind_since = Some(last_check),
                    Some(since) if since.elapsed() >= LAZY_FLUSH_INTERVAL => {
                        sequencer.nudge();
                        behind_since = None;
                    }
                    Some(_) => {}
                }
            }
        }
        sequencer.close();
    };
    std::thread::Builder::new().name("sequencer".into()).spawn(body).expect("the ticker thread starts")
}
