//! The two rings and the stages on them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam::channel::Sender;
use disruptor::{ProcessorSettings, Producer, Sequence, SingleConsumerBarrier, SingleProducer, build_single_producer};
use tally_codecs::wire::Reply;

use super::committed::{Committed, apply_collecting};
use super::doorbell::{Doorbell, INPUT_PUBLISHED, JOURNALED, LOOKED_UP, OUTPUT_PUBLISHED};
use super::gate::Gate;
use super::latency::{Stage, now_ns};
use super::wait::{StageWait, backoff};
use super::{Command, History, InputLog, OutcomeLog, PipelineConfig, PipelineStats, ReplyTo};
use crate::Ledger;
use crate::cold::{ColdFacts, Effects, gather};

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
        }
    }
}

/// A slot of the output ring: the input, its reply, where the reply goes, and for a
/// mutation (ticks included) its journal sequence and what it committed.
pub(crate) struct OutputSlot {
    timestamp: u64,
    /// Stage-clock readings: when the request was submitted (0 for a tick) and when the
    /// business logic published its outcome.
    submitted_ns: u64,
    applied_ns: u64,
    /// 0 for a query.
    sequence: u64,
    request_id: u64,
    command: Command,
    reply: Option<Reply>,
    reply_to: Option<Arc<dyn ReplyTo>>,
    committed: Committed,
    /// What a mutation committed, for the history stage (with a history store only).
    effects: Option<Effects>,
}

impl OutputSlot {
    fn empty() -> OutputSlot {
        OutputSlot {
            timestamp: 0,
            submitted_ns: 0,
            applied_ns: 0,
            sequence: 0,
            request_id: 0,
            command: Command::Tick,
            reply: None,
            reply_to: None,
            committed: Committed::default(),
            effects: None,
        }
    }
}

/// Waits until the history store holds every record that a decision at `sequence` may
/// take from it (all sequences below `sequence − hot_window`): the rule that makes the
/// cold facts, and so every decision, a function of the journal alone (docs/design.md
/// §3.9). Returns false if `stopping` was raised first.
pub fn wait_for_history(mark: &AtomicU64, sequence: u64, hot_window: u64, stopping: &AtomicBool) -> bool {
    let needed = crate::ledger::cold_cutoff(sequence, hot_window);
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
        let Stages { config, ledger, mut input_log, mut outcome_log, stats, gate, history, stopping } = self;
        let (lookup, mut writer, mark, hot_window) = match history {
            Some(History { lookup, writer, mark, hot_window }) => (Some(lookup), Some(writer), mark, hot_window),
            None => (None, None, Arc::new(AtomicU64::new(0)), u64::MAX),
        };
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
                if let (Some(reply_to), Some(reply)) = (&slot.reply_to, &slot.reply) {
                    reply_to.reply(slot.request_id, reply);
                }
                if started_ns != 0 {
                    let replied_ns = now_ns();
                    latencies.record_between(Stage::Reply, started_ns, replied_ns);
                    latencies.record_between(Stage::InNode, slot.submitted_ns, replied_ns);
                }
            })
            .thread_name("outcome-log")
            .handle_events_with(move |slot: &OutputSlot, _: Sequence, end_of_batch: bool| {
                // Every journal sequence reaches the outcome log, ticks included: the
                // stream it writes is gapless by sequence.
                if slot.sequence != 0 {
                    outcome_log.record(
                        slot.sequence,
                        slot.timestamp,
                        &slot.command,
                        slot.reply.as_ref(),
                        &slot.committed,
                    );
                }
                if end_of_batch {
                    outcome_log.end_of_batch();
                }
                outcomes_logged += 1;
                if end_of_batch {
                    outcome_stats.output_taken(1, outcomes_logged);
                }
            })
            .thread_name("history")
            .handle_events_with(move |slot: &OutputSlot, _: Sequence, end_of_batch: bool| {
                if let Some(writer) = writer.as_mut() {
                    if let Some(effects) = &slot.effects {
                        writer.record(effects);
                    }
                    if end_of_batch {
                        writer.end_of_batch();
                    }
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
                    *lock(&slot.cold) = gather(lookup.as_ref(), &command, sequence, hot_window);
                    slot.cold_mark.store(seen, Ordering::Relaxed);
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
                    let reply_to = lock(&slot.reply_to).take();
                    let sequence = slot.sequence.load(Ordering::Relaxed);
                    let mut cold = std::mem::take(&mut *lock(&slot.cold));
                    // The cold-lookup rule (docs/design.md §3.9): the facts must come from a
                    // store holding every record below the input's cut-off. When the history
                    // stage was more than the hot window behind as the look-up ran, wait for it
                    // here and look again (the one case where this thread reads the store).
                    let mut cold_ready = true;
                    if let Some(lookup) = &lookup {
                        let at = if command.is_mutation() { sequence } else { home.ledger.sequence() };
                        let needed = crate::ledger::cold_cutoff(at, hot_window);
                        if slot.cold_mark.load(Ordering::Relaxed).saturating_add(1) < needed {
                            cold_ready = wait_for_history(&bl_mark, at, hot_window, &stopping);
                            cold = gather(lookup.as_ref(), &command, sequence, hot_window);
                            stats.cold_lookups_on_business_logic.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The durability gate: nothing is applied, so nothing answered, before the
                    // policy's watermark has passed it. Refused only when the pipeline stops
                    // (and so is an input whose history wait gave up).
                    if cold_ready && gate.wait_for(sequence) {
                        events += command.events() as u64;
                        let mutation = command.is_mutation();
                        let (reply, committed) =
                            apply_collecting(&mut home.ledger, sequence, slot.timestamp, &command, cold);
                        let effects = (with_history && mutation).then(|| home.ledger.effects());
                        if reply.is_some() || sequence != 0 || effects.is_some() {
                            let (timestamp, request_id, submitted_ns) =
                                (slot.timestamp, slot.request_id, slot.submitted_ns);
                            let applied_ns = if taken_ns != 0 { now_ns() } else { 0 };
                            stats.stage_latencies().record_between(Stage::Apply, taken_ns, applied_ns);
                            publish(&mut output, &OUTPUT_PUBLISHED, |out: &mut OutputSlot| {
                                *out = OutputSlot {
                                    timestamp,
                                    submitted_ns,
                                    applied_ns,
                                    sequence,
                                    request_id,
                                    command,
                                    reply,
                                    reply_to,
                                    committed,
                                    effects,
                                };
                            });
                            outputs_published += 1;
                        }
                        inputs += 1;
                        applied_sequence = applied_sequence.max(sequence);
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
