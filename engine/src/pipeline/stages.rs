//! The two rings and the stages on them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use disruptor::{ProcessorSettings, Producer, Sequence, SingleConsumerBarrier, SingleProducer, build_single_producer};
use tally_codecs::wire::Reply;

use super::committed::{Committed, apply_collecting};
use super::doorbell::{Doorbell, INPUT_PUBLISHED, JOURNALED, LOOKED_UP, OUTPUT_PUBLISHED};
use super::feed::{Fed, Feed};
use super::gate::Gate;
use super::latency::{Stage, now_ns};
use super::wait::{StageWait, backoff, set_linger};
use super::{Command, History, HistoryWriter, InputLog, OutcomeLog, Owed, PipelineConfig, PipelineStats, ReplyTo};
use crate::Ledger;
use crate::cold::{ColdFacts, Effects, gather};
use crate::hot_window::{HotWindow, window_events};

/// A slot of the input ring. The sequencer fills it through `&mut`; the stages after it
/// only get `&`, so the parts the business logic moves out sit behind (uncontended) locks.
pub(crate) struct InputSlot {
    pub timestamp: u64,
    /// Stage-clock readings ([`now_ns`]): when the request was submitted and when the
    /// sequencer published it; 0 for a tick.
    pub submitted_ns: u64,
    pub published_ns: u64,
    /// When the journal stage took the slot.
    pub journal_ns: AtomicU64,
    /// The journal sequence of a mutation, written by the journal stage; 0 for a query.
    pub sequence: AtomicU64,
    pub request_id: u64,
    pub command: Mutex<Command>,
    pub reply_to: Mutex<Option<Arc<dyn ReplyTo>>>,
    /// What the cold-lookup stage found in the history store for this input.
    pub cold: Mutex<ColdFacts>,
    /// The history store's mark the cold-lookup stage read before it gathered `cold`.
    pub cold_mark: AtomicU64,
    /// The cut-off the cold-lookup stage gathered `cold` for.
    pub cold_cutoff: AtomicU64,
}

impl InputSlot {
    fn empty() -> InputSlot {
        InputSlot {
            timestamp: 0,
            submitted_ns: 0,
            published_ns: 0,
            journal_ns: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            request_id: 0,
            command: Mutex::new(Command::Tick),
            reply_to: Mutex::new(None),
            cold: Mutex::new(ColdFacts::default()),
            cold_mark: AtomicU64::new(0),
            cold_cutoff: AtomicU64::new(0),
        }
    }
}

/// A slot of the output ring: the input, its reply, the request owed it, and for a
/// mutation (ticks included) its journal sequence and what it committed.
pub(crate) struct OutputSlot {
    timestamp: u64,
    /// Stage-clock readings: when the request was submitted (0 for a tick) and when the
    /// business logic published its outcome.
    submitted_ns: u64,
    applied_ns: u64,
    /// 0 for a query.
    sequence: u64,
    /// The input and what it committed, for the outcome-log stage, which takes them out
    /// (as the history stage takes the effects): a request's records would otherwise
    /// stay in the slot until the ring comes round to it again.
    command: Mutex<Command>,
    reply: Option<Reply>,
    /// The request that waits for `reply` (`None` for a tick); the reply stage takes it out
    /// to answer it.
    owed: Mutex<Option<Owed>>,
    committed: Mutex<Committed>,
    /// What a mutation committed, for the history stage (with a history store only),
    /// which takes it out: a slot keeps its contents until the ring comes round to it
    /// again, and a request's effects are as large as the request.
    effects: Mutex<Option<Effects>>,
    /// What the input added to the hot window ([`window_events`]), for the history
    /// stage's grouping (the outcome stage may have taken the command by then).
    window_events: u64,
}

impl OutputSlot {
    fn empty() -> OutputSlot {
        OutputSlot {
            timestamp: 0,
            submitted_ns: 0,
            applied_ns: 0,
            sequence: 0,
            command: Mutex::new(Command::Tick),
            window_events: 0,
            reply: None,
            owed: Mutex::new(None),
            committed: Mutex::new(Committed::default()),
            effects: Mutex::new(None),
        }
    }
}

/// Waits until the history store holds every record that a decision with cut-off
/// `cutoff` may take from it (all sequences below it): the rule that makes the cold
/// facts, and so every decision, a function of the journal alone (docs/design.md §3.9).
/// Returns false if `stopping` was raised first.
pub fn wait_for_history(mark: &AtomicU64, cutoff: u64, stopping: &AtomicBool) -> bool {
    let needed = cutoff;
    let mut attempts = 0u32;
    while mark.load(Ordering::Acquire).saturating_add(1) < needed {
        if stopping.load(Ordering::Acquire) {
            return false;
        }
        backoff(attempts);
        attempts = attempts.saturating_add(1);
    }
    true
}

/// The longest the history writer holds inputs back to write them in one store
/// transaction (see [`HistoryGroup`]).
pub(crate) const HISTORY_GROUP_MAX: Duration = Duration::from_millis(2);

/// The history writer's grouping of inputs into one store transaction (docs/design.md
/// §3.9; it runs on the `history-writer` thread, fed by the ring's history consumer
/// through a [`Feed`], and a "batch" is what it found queued at once). A transaction per
/// batch costs tens of microseconds, which single-request batches each pay in full; so
/// batches are held back while
///
/// - the held inputs span fewer than `hold_span` = W/4 sequences (W the hot window's
///   input bound) and carry fewer than a quarter of its events bound E (counted as the
///   window counts them, [`window_events`]), and
/// - the oldest held input was taken less than [`HISTORY_GROUP_MAX`] ago,
///
/// and written once a bound is reached, at a batch end or when the writer finds its feed
/// empty (its idle work). The first bounds keep `wait_for_history` from waiting on a commit
/// that only a later input would trigger: a window cut by W holds W inputs, more than a
/// held group spans, and one cut by E holds more than E − 8 189 ≥ E/4 events (E is at
/// least [`crate::HOT_WINDOW_EVENTS_MIN`] on a node), more than a held group carries, so
/// the held inputs are all at or above the cut-off and the store already shows
/// everything below it. (With a smaller E, as tests use, the time bound writes the group.)
pub(crate) struct HistoryGroup {
    writer: Box<dyn HistoryWriter>,
    hold_span: u64,
    /// And while they carry fewer than this many transfer events (a quarter of the
    /// window's events bound).
    hold_events: u64,
    held_events: u64,
    /// The first sequence held back and when it was taken; `None`: nothing held.
    first: Option<(u64, Instant)>,
    last: u64,
}

impl HistoryGroup {
    pub(crate) fn new(writer: Box<dyn HistoryWriter>, window: &HotWindow) -> HistoryGroup {
        HistoryGroup {
            writer,
            hold_span: window.inputs() / 4,
            hold_events: window.events() / 4,
            held_events: 0,
            first: None,
            last: 0,
        }
    }

    /// Holds one input's effects; `events` is what the input added to the hot window.
    pub(crate) fn record(&mut self, effects: Effects, events: u64) {
        self.record_at(effects, events, Instant::now());
    }

    fn record_at(&mut self, effects: Effects, events: u64, now: Instant) {
        let sequence = effects.sequence;
        self.held_events = self.held_events.saturating_add(events);
        self.writer.record(effects);
        self.first.get_or_insert((sequence, now));
        self.last = sequence;
    }

    /// How long the held inputs may still wait; `None`: commit now (or nothing held).
    fn hold_for(&self, now: Instant) -> Option<Duration> {
        let (first, since) = self.first?;
        if self.last.saturating_sub(first).saturating_add(1) >= self.hold_span || self.held_events >= self.hold_events {
            return None;
        }
        HISTORY_GROUP_MAX.checked_sub(now.saturating_duration_since(since)).filter(|left| !left.is_zero())
    }

    fn commit(&mut self) {
        self.held_events = 0;
        if self.first.take().is_some() {
            self.writer.end_of_batch();
        }
    }

    pub(crate) fn end_of_batch(&mut self) {
        self.end_of_batch_at(Instant::now());
    }

    fn end_of_batch_at(&mut self, now: Instant) {
        if self.hold_for(now).is_none() {
            self.commit();
        }
    }

    /// The idle work (the feed is empty): writes a group that is due, then the writer's own.
    pub(crate) fn idle(&mut self) -> Option<Duration> {
        self.idle_at(Instant::now())
    }

    fn idle_at(&mut self, now: Instant) -> Option<Duration> {
        let held = self.hold_for(now);
        if held.is_none() {
            self.commit();
        }
        match (held, self.writer.idle()) {
            (Some(held), Some(writer)) => Some(held.min(writer)),
            (held, writer) => held.or(writer),
        }
    }
}

impl Drop for HistoryGroup {
    /// A stopping stage writes what it held back (the writer's own drop makes it durable).
    fn drop(&mut self) {
        self.commit();
    }
}

/// How long the outcome-log and history stages sleep after a batch before they wait on
/// the output ring's doorbell again (see `wait::set_linger`).
pub(crate) const DEFERRED_STAGE_LINGER: Duration = Duration::from_millis(1);

/// Makes the calling ring consumer take what a millisecond brings in one wake-up (the
/// outcome-log and history consumers: no request waits for them).
struct Linger {
    set: bool,
}

impl Linger {
    fn once(&mut self) {
        if !self.set {
            self.set = true;
            set_linger(DEFERRED_STAGE_LINGER);
        }
    }
}

impl Fed for HistoryGroup {
    /// One input's effects and what it added to the hot window.
    type Entry = (Effects, u64);

    fn take(&mut self, (effects, events): (Effects, u64)) {
        self.record(effects, events);
    }

    fn end_of_batch(&mut self) {
        HistoryGroup::end_of_batch(self);
    }

    fn idle(&mut self) -> Option<Duration> {
        HistoryGroup::idle(self)
    }
}

/// One mutation as the outcome log records it, moved (the reply copied) out of its
/// output slot.
pub(crate) struct OutcomeEntry {
    sequence: u64,
    timestamp: u64,
    command: Command,
    reply: Option<Reply>,
    committed: Committed,
}

/// The outcome log as its writer thread drives it.
struct OutcomeWriter(Box<dyn OutcomeLog>);

impl Fed for OutcomeWriter {
    type Entry = OutcomeEntry;

    fn take(&mut self, entry: OutcomeEntry) {
        self.0.record(entry.sequence, entry.timestamp, &entry.command, entry.reply.as_ref(), &entry.committed);
    }

    fn end_of_batch(&mut self) {
        self.0.end_of_batch();
    }

    fn idle(&mut self) -> Option<Duration> {
        self.0.idle()
    }
}

pub(crate) type InputProducer = SingleProducer<InputSlot, SingleConsumerBarrier>;

/// Locks a slot part; a poisoned lock only means another stage panicked mid-way, and
/// the slot's value is still whole, so the poison is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes into a ring, backing off (not spinning a core) while it is full, then rings
/// `bell` for the ring's parked consumers.
pub(crate) fn publish<E, C, F>(producer: &mut SingleProducer<E, C>, bell: &Doorbell, fill: F)
where
    F: FnOnce(&mut E),
    SingleProducer<E, C>: Producer<E>,
{
    let mut fill = Some(fill);
    let mut attempts = 0u32;
    loop {
        let published = producer.try_publish(|slot| {
            if let Some(fill) = fill.take() {
                fill(slot);
            }
        });
        if published.is_ok() {
            bell.ring();
            return;
        }
        backoff(attempts);
        attempts = attempts.saturating_add(1);
    }
}

pub(crate) struct Stages {
    pub config: PipelineConfig,
    pub ledger: Ledger,
    pub input_log: Box<dyn InputLog>,
    pub outcome_log: Box<dyn OutcomeLog>,
    pub stats: Arc<PipelineStats>,
    pub gate: Gate,
    pub history: Option<History>,
    pub stopping: Arc<AtomicBool>,
}

/// Owns the ledger on the business-logic thread and hands it back when the thread ends.
struct LedgerHome {
    ledger: Ledger,
    back: Sender<Ledger>,
}

impl Drop for LedgerHome {
    fn drop(&mut self) {
        // Nobody may be waiting (the pipeline was dropped without `shutdown`); that is fine.
        let _ = self.back.send(std::mem::take(&mut self.ledger));
    }
}

impl Stages {
    /// Starts the output ring, then the input ring, and returns the input producer.
    pub fn build(self, ledger_back: Sender<Ledger>) -> InputProducer {
        let Stages { config, ledger, mut input_log, outcome_log, stats, gate, history, stopping } = self;
        // The ledger's own window, floor included: the look-ups ahead of it and its
        // eviction must draw the same line.
        let (lookup, writer, mark, mut window) = match history {
            Some(History { lookup, writer, mark }) => {
                let window = ledger.hot_window().clone();
                (Some(lookup), Some(HistoryGroup::new(writer, &window)), mark, window)
            }
            None => (None, None, Arc::new(AtomicU64::new(0)), HotWindow::everything()),
        };
        // The outcome stream and the history store are written by threads of their own,
        // off the output ring (`feed`); the ring's two consumers only queue for them.
        let started = Feed::start(OutcomeWriter(outcome_log), "outcome-writer")
            .and_then(|outcomes| Ok((outcomes, writer.map(|group| Feed::start(group, "history-writer")).transpose()?)));
        let (mut outcome_feed, mut history_feed) = match started {
            Ok(feeds) => feeds,
            Err(error) => panic!("cannot start a deferred writer thread: {error}"),
        };
        let (mut outcome_linger, mut history_linger) = (Linger { set: false }, Linger { set: false });
        let with_history = lookup.is_some();
        let slots = config.ring_slots.max(2).next_power_of_two();
        let wait = config.wait;
        let durability = config.durability;
        let checkpoints = config.checkpoints.clone();
        stats.set_ring_slots(slots as u64);

        // Who waits on which doorbell, and who rings which (docs/design.md, "Waiting"):
        // each hand-off has its own, so a ring wakes only the stage that can go on.
        let on_output = StageWait { wait, waits_on: &OUTPUT_PUBLISHED, rings: None };
        let journal_wait = StageWait { wait, waits_on: &INPUT_PUBLISHED, rings: Some(&JOURNALED) };
        let cold_lookup_wait = StageWait { wait, waits_on: &JOURNALED, rings: Some(&LOOKED_UP) };
        let business_logic_wait = StageWait { wait, waits_on: &LOOKED_UP, rings: None };
        let reply_stats = stats.clone();
        let (outcome_stats, history_stats) = (stats.clone(), stats.clone());
        // Output slots each consumer has taken (for the output ring's occupancy).
        let (mut replied, mut outcomes_logged, mut history_recorded) = (0u64, 0u64, 0u64);
        let mut output = build_single_producer(slots, OutputSlot::empty, on_output)
            .thread_name("reply")
            .handle_events_with(move |slot: &OutputSlot, _: Sequence, end_of_batch: bool| {
                replied += 1;
                if end_of_batch {
                    reply_stats.output_taken(0, replied);
                }
                let latencies = reply_stats.stage_latencies();
                let started_ns = if slot.submitted_ns != 0 { now_ns() } else { 0 };
                latencies.record_between(Stage::ReplyWait, slot.applied_ns, started_ns);
                // A request always has a reply; were one missing, dropping `owed` abandons it.
                let owed = lock(&slot.owed).take();
                if let (Some(owed), Some(reply)) = (owed, &slot.reply) {
                    owed.answer(reply);
                }
                if started_ns != 0 {
                    let replied_ns = now_ns();
                    latencies.record_between(Stage::Reply, started_ns, replied_ns);
                    latencies.record_between(Stage::InNode, slot.submitted_ns, replied_ns);
                }
            })
            .thread_name("outcome-log")
            .handle_events_with(move |slot: &OutputSlot, _: Sequence, end_of_batch: bool| {
                outcome_linger.once();
                // Every journal sequence reaches the outcome log, ticks included: the
                // stream it writes is gapless by sequence.
                if slot.sequence != 0 {
                    let command = std::mem::replace(&mut *lock(&slot.command), Command::Tick);
                    let committed = std::mem::take(&mut *lock(&slot.committed));
                    let events = command.events() as u64;
                    let (sequence, timestamp, reply) = (slot.sequence, slot.timestamp, slot.reply.clone());
                    outcome_feed.record(OutcomeEntry { sequence, timestamp, command, reply, committed }, events);
                }
                outcomes_logged += 1;
                if end_of_batch {
                    outcome_stats.output_taken(1, outcomes_logged);
                }
            })
            .thread_name("history")
            .handle_events_with(move |slot: &OutputSlot, _: Sequence, end_of_batch: bool| {
                history_linger.once();
                if let Some(feed) = &mut history_feed
                    && let Some(effects) = lock(&slot.effects).take()
                {
                    feed.record((effects, slot.window_events), slot.window_events);
                }
                history_recorded += 1;
                if end_of_batch {
                    history_stats.output_taken(2, history_recorded);
                }
            })
            .build();

        let mut home = LedgerHome { ledger, back: ledger_back };
        let mut journal_batch_ended = false;
        let mut lookup_batch_ended = false;
        let journal_stats = stats.clone();
        let mut inputs = 0u64;
        let mut events = 0u64;
        let mut applied_sequence = 0u64;
        // Set once a mutation was not applied (the pipeline stopped before its watermark or
        // its history wait passed): no later one may be, or the ledger, the history store's
        // mark and a checkpoint would skip a sequence and the skipped input could be
        // applied later, after those behind it.
        let mut mutation_skipped = false;
        // Input slots taken and output slots published (for the rings' occupancy).
        let (mut inputs_taken, mut outputs_published) = (0u64, 0u64);
        let stage_lookup = lookup.clone();
        let bl_mark = mark.clone();
        build_single_producer(slots, InputSlot::empty, journal_wait)
            .thread_name("journal")
            .handle_events_with(move |slot: &InputSlot, _: Sequence, end_of_batch: bool| {
                // The previous batch's cursor has moved by now (the ring stores it between
                // batches), so the cold-lookup stage, parked behind it, may go on.
                if std::mem::take(&mut journal_batch_ended) {
                    JOURNALED.ring();
                }
                if slot.published_ns != 0 {
                    let taken_ns = now_ns();
                    journal_stats.stage_latencies().record_between(Stage::JournalWait, slot.published_ns, taken_ns);
                    slot.journal_ns.store(taken_ns, Ordering::Relaxed);
                } else {
                    slot.journal_ns.store(0, Ordering::Relaxed);
                }
                let command = lock(&slot.command);
                let sequence = if command.is_mutation() { input_log.append(slot.timestamp, &command) } else { 0 };
                drop(command);
                // The ring's cursor publishes this store to the business-logic thread.
                slot.sequence.store(sequence, Ordering::Relaxed);
                // Under `local` this flushes before returning; the gate does not rely on it.
                if end_of_batch {
                    let commit_ns = now_ns();
                    input_log.commit(durability);
                    journal_stats.stage_latencies().record_between(Stage::JournalCommit, commit_ns, now_ns());
                    journal_batch_ended = true;
                }
            })
            .and_then()
            .thread_name("cold-lookup")
            .handle_events_with_wait_strategy(
                move |slot: &InputSlot, _: Sequence, end_of_batch: bool| {
                    // As the journal stage does for this one: the previous batch's cursor
                    // has moved, so the business logic may go on.
                    if std::mem::replace(&mut lookup_batch_ended, end_of_batch) {
                        LOOKED_UP.ring();
                    }
                    let Some(lookup) = &stage_lookup else { return };
                    let sequence = slot.sequence.load(Ordering::Relaxed);
                    let command = lock(&slot.command);
                    // What the store held before the look-up began: the business logic
                    // checks that it covers the input's cut-off. (Waiting here instead would
                    // stall the ring: this stage releases its slots only at the end of its
                    // batch.)
                    let seen = mark.load(Ordering::Acquire);
                    // Its own copy of the ledger's window, fed the same inputs in the same
                    // order; the business logic checks the line against the ledger's.
                    let cutoff = if command.is_mutation() {
                        let cutoff = window.cutoff(sequence);
                        window.record(sequence, window_events(&command));
                        cutoff
                    } else {
                        0
                    };
                    *lock(&slot.cold) = gather(lookup.as_ref(), &command, cutoff);
                    slot.cold_mark.store(seen, Ordering::Relaxed);
                    slot.cold_cutoff.store(cutoff, Ordering::Relaxed);
                },
                cold_lookup_wait,
            )
            .and_then()
            .thread_name("business-logic")
            .handle_events_with_wait_strategy(
                move |slot: &InputSlot, _: Sequence, end_of_batch: bool| {
                    inputs_taken += 1;
                    let taken_ns = if slot.submitted_ns != 0 { now_ns() } else { 0 };
                    stats.stage_latencies().record_between(
                        Stage::BusinessLogicWait,
                        slot.journal_ns.load(Ordering::Relaxed),
                        taken_ns,
                    );
                    let command = std::mem::replace(&mut *lock(&slot.command), Command::Tick);
                    // From here the request is answered or, if dropped unanswered, abandoned.
                    let owed = lock(&slot.reply_to).take().map(|reply_to| Owed::new(reply_to, slot.request_id));
                    let sequence = slot.sequence.load(Ordering::Relaxed);
                    let mut cold = std::mem::take(&mut *lock(&slot.cold));
                    // The cold-lookup rule (docs/design.md §3.9): the facts must come from a
                    // store holding every record below the input's cut-off, the ledger's. When
                    // the history stage was behind that as the look-up ran, or the look-up
                    // drew another line (it never should), wait for the store here and look
                    // again (the one case where this thread reads the store).
                    let mut cold_ready = true;
                    if let Some(lookup) = &lookup {
                        let mutation = command.is_mutation();
                        let needed = home.ledger.hot_cutoff(if mutation { sequence } else { 0 });
                        if slot.cold_mark.load(Ordering::Relaxed).saturating_add(1) < needed
                            || (mutation && slot.cold_cutoff.load(Ordering::Relaxed) != needed)
                        {
                            cold_ready = wait_for_history(&bl_mark, needed, &stopping);
                            cold = gather(lookup.as_ref(), &command, needed);
                            stats.cold_lookups_on_business_logic.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The durability gate: nothing is applied, so nothing answered, before the
                    // policy's watermark has passed it. Refused only when the pipeline stops
                    // (and so is an input whose history wait gave up): such a request is
                    // abandoned, so that whoever waits for its reply is freed, and so is
                    // every mutation after it (queries, sequence 0, are still answered).
                    let skipped_before = mutation_skipped && sequence != 0;
                    if !skipped_before && cold_ready && gate.wait_for(sequence) {
                        events += command.events() as u64;
                        let mutation = command.is_mutation();
                        let (reply, committed) =
                            apply_collecting(&mut home.ledger, sequence, slot.timestamp, &command, cold);
                        let effects = (with_history && mutation).then(|| home.ledger.effects());
                        if reply.is_some() || sequence != 0 || effects.is_some() {
                            let (timestamp, submitted_ns) = (slot.timestamp, slot.submitted_ns);
                            let applied_ns = if taken_ns != 0 { now_ns() } else { 0 };
                            stats.stage_latencies().record_between(Stage::Apply, taken_ns, applied_ns);
                            let window_events = if mutation { window_events(&command) } else { 0 };
                            publish(&mut output, &OUTPUT_PUBLISHED, |out: &mut OutputSlot| {
                                *out = OutputSlot {
                                    timestamp,
                                    submitted_ns,
                                    applied_ns,
                                    sequence,
                                    command: Mutex::new(command),
                                    reply,
                                    owed: Mutex::new(owed),
                                    committed: Mutex::new(committed),
                                    effects: Mutex::new(effects),
                                    window_events,
                                };
                            });
                            outputs_published += 1;
                        }
                        inputs += 1;
                        applied_sequence = applied_sequence.max(sequence);
                    } else {
                        mutation_skipped |= sequence != 0;
                        drop(owed);
                    }
                    if end_of_batch {
                        stats.business_logic_moved(inputs_taken, outputs_published);
                        stats.publish(applied_sequence, inputs, events, &home.ledger);
                        (inputs, events) = (0, 0);
                        // A batch boundary: the ledger is exactly the state after `applied_sequence`.
                        if let Some(checkpoints) = &checkpoints {
                            checkpoints.offer(applied_sequence, &home.ledger, &stats);
                        }
                    }
                },
                business_logic_wait,
            )
            .build()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use super::{HISTORY_GROUP_MAX, HistoryGroup};
    use crate::Effects;
    use crate::pipeline::HistoryWriter;

    /// Counts commits and records the sequences each one wrote.
    #[derive(Default)]
    struct Commits {
        held: Vec<u64>,
        written: Arc<Mutex<Vec<Vec<u64>>>>,
        idle_calls: Arc<AtomicU64>,
    }

    impl HistoryWriter for Commits {
        fn record(&mut self, effects: Effects) {
            self.held.push(effects.sequence);
        }

        fn end_of_batch(&mut self) {
            let batch = std::mem::take(&mut self.held);
            self.written.lock().expect("not poisoned").push(batch);
        }

        fn idle(&mut self) -> Option<Duration> {
            self.idle_calls.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    fn effects(sequence: u64) -> Effects {
        Effects { sequence, ..Effects::default() }
    }

    #[test]
    fn batches_are_grouped_until_a_quarter_of_the_hot_window_or_the_time_bound_and_idle_writes_a_due_group() {
        let writer = Commits::default();
        let written = Arc::clone(&writer.written);
        let commits = || written.lock().expect("not poisoned").clone();
        // W = 64: held while the group spans fewer than 16 sequences.
        let mut group = HistoryGroup::new(Box::new(writer), &crate::HotWindow::new(64, u64::MAX, 0));
        let start = Instant::now();
        for sequence in 1..=15 {
            group.record_at(effects(sequence), 0, start);
            group.end_of_batch_at(start);
        }
        assert!(commits().is_empty(), "fifteen single-input batches are held back: {:?}", commits());
        group.record_at(effects(16), 0, start);
        group.end_of_batch_at(start);
        assert_eq!(commits(), vec![(1..=16).collect::<Vec<_>>()], "the sixteenth reaches W/4: one commit");

        // The time bound: a short group is written once it is due, by the idle work.
        group.record_at(effects(17), 0, start);
        group.end_of_batch_at(start);
        let half = HISTORY_GROUP_MAX / 2;
        assert_eq!(group.idle_at(start + half), Some(HISTORY_GROUP_MAX - half), "not due yet: sleep until it is");
        assert_eq!(commits().len(), 1);
        assert_eq!(group.idle_at(start + HISTORY_GROUP_MAX), None, "written: nothing left held");
        assert_eq!(commits().last(), Some(&vec![17]));
        // And by a batch end past the bound.
        group.record_at(effects(18), 0, start);
        group.end_of_batch_at(start + HISTORY_GROUP_MAX);
        assert_eq!(commits().last(), Some(&vec![18]));
        assert_eq!(group.idle_at(start), None, "nothing held");
    }

    #[test]
    fn a_small_hot_window_commits_every_batch_and_a_stop_writes_what_is_held() {
        let writer = Commits::default();
        let written = Arc::clone(&writer.written);
        let idle_calls = Arc::clone(&writer.idle_calls);
        // W = 3: W/4 is 0, so nothing is ever held (the rule `wait_for_history` relies on).
        let mut group = HistoryGroup::new(Box::new(writer), &crate::HotWindow::new(3, u64::MAX, 0));
        let start = Instant::now();
        for sequence in 1..=3 {
            group.record_at(effects(sequence), 0, start);
            group.end_of_batch_at(start);
        }
        assert_eq!(written.lock().expect("not poisoned").len(), 3);
        group.idle_at(start);
        assert_eq!(idle_calls.load(Ordering::Relaxed), 1, "the writer's own idle work runs too");

        let writer = Commits::default();
        let written = Arc::clone(&writer.written);
        let mut group = HistoryGroup::new(Box::new(writer), &crate::HotWindow::new(256, u64::MAX, 0));
        group.record_at(effects(1), 0, start);
        group.end_of_batch_at(start);
        assert!(written.lock().expect("not poisoned").is_empty());
        drop(group);
        assert_eq!(*written.lock().expect("not poisoned"), vec![vec![1]], "a stop writes the held group");
    }
}
