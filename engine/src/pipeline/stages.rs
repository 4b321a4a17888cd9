//! The two rings and the stages on them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam::channel::Sender;
use disruptor::{ProcessorSettings, Producer, Sequence, SingleConsumerBarrier, SingleProducer, build_single_producer};
use tally_codecs::wire::Reply;

use super::committed::{Committed, apply_collecting};
use super::doorbell;
use super::gate::Gate;
use super::wait::backoff;
use super::{Command, InputLog, OutcomeLog, PipelineConfig, PipelineStats, ReplyTo};
use crate::Ledger;

/// A slot of the input ring. The sequencer fills it through `&mut`; the stages after it
/// only get `&`, so the parts the business logic moves out sit behind (uncontended) locks.
pub(crate) struct InputSlot {
    pub timestamp: u64,
    /// The journal sequence of a mutation, written by the journal stage; 0 for a query.
    pub sequence: AtomicU64,
    pub request_id: u64,
    pub command: Mutex<Command>,
    pub reply_to: Mutex<Option<Arc<dyn ReplyTo>>>,
}

impl InputSlot {
    fn empty() -> InputSlot {
        InputSlot {
            timestamp: 0,
            sequence: AtomicU64::new(0),
            request_id: 0,
            command: Mutex::new(Command::Tick),
            reply_to: Mutex::new(None),
        }
    }
}

/// A slot of the output ring: the input, its reply, where the reply goes, and for a
/// mutation (ticks included) its journal sequence and what it committed.
pub(crate) struct OutputSlot {
    timestamp: u64,
    /// 0 for a query.
    sequence: u64,
    request_id: u64,
    command: Command,
    reply: Option<Reply>,
    reply_to: Option<Arc<dyn ReplyTo>>,
    committed: Committed,
}

impl OutputSlot {
    fn empty() -> OutputSlot {
        OutputSlot {
            timestamp: 0,
            sequence: 0,
            request_id: 0,
            command: Command::Tick,
            reply: None,
            reply_to: None,
            committed: Committed::default(),
        }
    }
}

pub(crate) type InputProducer = SingleProducer<InputSlot, SingleConsumerBarrier>;

/// Locks a slot part; a poisoned lock only means another stage panicked mid-way, and
/// the slot's value is still whole, so the poison is ignored.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Publishes into a ring, backing off (not spinning a core) while it is full, then rings
/// the doorbell for the ring's parked consumers.
pub(crate) fn publish<E, C, F>(producer: &mut SingleProducer<E, C>, fill: F)
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
            doorbell::ring();
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
        let Stages { config, ledger, mut input_log, mut outcome_log, stats, gate } = self;
        let slots = config.ring_slots.max(2).next_power_of_two();
        let wait = config.wait;
        let durability = config.durability;
        let checkpoints = config.checkpoints.clone();

        let mut output = build_single_producer(slots, OutputSlot::empty, wait)
            .thread_name("reply")
            .handle_events_with(|slot: &OutputSlot, _: Sequence, _: bool| {
                if let (Some(reply_to), Some(reply)) = (&slot.reply_to, &slot.reply) {
                    reply_to.reply(slot.request_id, reply);
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
            })
            .build();

        let mut home = LedgerHome { ledger, back: ledger_back };
        let mut batch_ended = false;
        let mut inputs = 0u64;
        let mut events = 0u64;
        let mut applied_sequence = 0u64;
        build_single_producer(slots, InputSlot::empty, wait)
            .thread_name("journal")
            .handle_events_with(move |slot: &InputSlot, _: Sequence, end_of_batch: bool| {
                // The previous batch's cursor has moved by now (the ring stores it between
                // batches), so the business logic, parked behind it, may go on.
                if std::mem::take(&mut batch_ended) {
                    doorbell::ring();
                }
                let command = lock(&slot.command);
                let sequence = if command.is_mutation() { input_log.append(slot.timestamp, &command) } else { 0 };
                drop(command);
                // The ring's cursor publishes this store to the business-logic thread.
                slot.sequence.store(sequence, Ordering::Relaxed);
                // Under `local` this flushes before returning; the gate does not rely on it.
                if end_of_batch {
                    input_log.commit(durability);
                    batch_ended = true;
                }
            })
            .and_then()
            .thread_name("business-logic")
            .handle_events_with(move |slot: &InputSlot, _: Sequence, end_of_batch: bool| {
                let command = std::mem::replace(&mut *lock(&slot.command), Command::Tick);
                let reply_to = lock(&slot.reply_to).take();
                let sequence = slot.sequence.load(Ordering::Relaxed);
                // The durability gate: nothing is applied, so nothing answered, before the
                // policy's watermark has passed it. Refused only when the pipeline stops.
                if gate.wait_for(sequence) {
                    events += command.events() as u64;
                    let (reply, committed) = apply_collecting(&mut home.ledger, slot.timestamp, &command);
                    if reply.is_some() || sequence != 0 {
                        let (timestamp, request_id) = (slot.timestamp, slot.request_id);
                        publish(&mut output, |out: &mut OutputSlot| {
                            *out = OutputSlot { timestamp, sequence, request_id, command, reply, reply_to, committed };
                        });
                    }
                    inputs += 1;
                    applied_sequence = applied_sequence.max(sequence);
                }
                if end_of_batch {
                    stats.publish(applied_sequence, inputs, events, &home.ledger);
                    (inputs, events) = (0, 0);
                    // A batch boundary: the ledger is exactly the state after `applied_sequence`.
                    if let Some(checkpoints) = &checkpoints {
                        checkpoints.offer(applied_sequence, &home.ledger, &stats);
                    }
                }
            })
            .build()
    }
}
